"""hyperprune.torch: specs derived from PyTorch modules, and modules pruned in place.

Skipped without torch. Needs no `hyperprune` binary: the models are built in PyTorch. The
test that scores a module in both PyTorch and hyperprune needs Fashion-MNIST in its default
folder (`apt-get install -y dataset-fashion-mnist`) and is skipped without it.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import hyperprune as hp  # noqa: E402
from hyperprune.torch import prune_module, spec_from_module  # noqa: E402

DIGITS = torch.zeros(1, 1, 8, 8)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class SmallCnn(nn.Module):
    """conv-relu-maxpool-flatten-linear for the 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with batch norm, an identity or projection skip."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """A stem, two BasicBlocks (the second with a projection), global pooling, a classifier."""

    def __init__(self, channels: int = 1, width: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-3, momentum=0.2)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


class Functional(nn.Module):
    """The functional and method forms: F.relu, torch.tanh, F.max_pool2d, x.view, x.mean, torch.add."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding="same")
        self.b = nn.Conv2d(4, 4, 3, stride=(1, 1), padding=(1, 1))
        self.skip = nn.Identity()
        self.pool = nn.AvgPool2d(2, stride=1)
        self.head = nn.Linear(4, 10, bias=False)
        self.out = nn.Linear(10, 10)

    def forward(self, x):
        a = F.relu(self.a(x))
        b = torch.tanh(self.b(a)).sigmoid()
        s = torch.add(self.skip(a), other=b)
        s = F.max_pool2d(s, kernel_size=2, stride=2)
        s = F.gelu(self.pool(s)).contiguous()
        f = s.mean((2, 3))
        f = F.dropout(f, 0.1, training=self.training)
        return self.out(torch.relu(self.head(f.view(f.size(0), -1))))


def set_batch_norm_statistics(module: nn.Module, seed: int = 0) -> None:
    """Distinct, non-default batch-norm scales, shifts and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=generator))
                m.bias.copy_(0.2 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                m.num_batches_tracked.fill_(100)


def effective_state_dict(module: nn.Module) -> Dict[str, "torch.Tensor"]:
    """The state dict a module pruned with torch.nn.utils.prune computes with (masks folded in)."""
    state = module.state_dict()
    out = {}
    for key, value in state.items():
        base = key[: -len("_orig")]
        if key.endswith("_orig") and base + "_mask" in state:
            out[base] = value * state[base + "_mask"]
        elif not (key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state):
            out[key] = value
    return out


def test_importing_hyperprune_does_not_import_torch() -> None:
    code = "import sys, hyperprune; assert 'torch' not in sys.modules and 'hyperprune.torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr


def test_a_small_cnn_gives_a_spec_hyperprune_builds_with_the_module_state_dict() -> None:
    torch.manual_seed(0)
    net = SmallCnn()
    spec = spec_from_module(net, DIGITS)
    assert (spec["name"], spec["input"], spec["classes"]) == ("SmallCnn", [1, 8, 8], 10)
    assert [layer["type"] for layer in spec["layers"]] == ["conv2d", "relu", "maxpool", "flatten", "linear"]
    assert spec["layers"][0] == {
        "type": "conv2d", "name": "conv", "out_channels": 8, "kernel": 3, "stride": 1, "padding": 1, "bias": True,
    }  # fmt: skip
    assert spec["layers"][2] == {"type": "maxpool", "name": "pool", "kernel": 2, "stride": 2}
    assert all("inputs" not in layer for layer in spec["layers"]), "a chain needs no wiring"
    model = hp.Model.from_state_dict(net.state_dict(), spec)
    assert model.arch == "SmallCnn" and model.prunable() == ["conv.weight", "fc.weight"]
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value.numpy())
    assert 0.0 <= hp.evaluate(model, dataset="digits")["accuracy"] <= 1.0


def test_a_sequential_copy_of_a_preset_scores_as_the_preset() -> None:
    """An nn.Sequential built like the `cnn-digits` preset: the same layers, the same tensor
    names, and the same accuracy on digits whether scored through its spec or the preset."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10),
    )  # fmt: skip
    spec = spec_from_module(net, DIGITS, name="cnn-digits-copy")
    preset = hp.Model.from_state_dict(net.state_dict(), "cnn-digits")
    derived = hp.Model.from_state_dict(net.state_dict(), spec)
    # The preset's JSON leaves out a pooling stride equal to its window, and names no node.
    fields = lambda layer: {k: v for k, v in layer.items() if k not in ("name", "inputs")}  # noqa: E731
    window = lambda layer: {"stride": layer["kernel"]} if layer["type"] == "maxpool" else {}  # noqa: E731
    assert [fields(layer) for layer in spec["layers"]] == [{**window(p), **fields(p)} for p in preset.spec["layers"]]
    assert derived.prunable() == preset.prunable() == ["0.weight", "3.weight", "7.weight", "9.weight"]
    assert hp.evaluate(derived, dataset="digits") == hp.evaluate(preset, dataset="digits")


def test_functional_and_method_forms_translate() -> None:
    spec = spec_from_module(Functional(), DIGITS)
    kinds = [(layer["type"], layer["name"]) for layer in spec["layers"]]
    assert [k for k, _ in kinds] == [
        "conv2d", "relu", "conv2d", "tanh", "sigmoid", "add", "maxpool", "avgpool", "gelu",
        "global_avgpool", "flatten", "linear", "relu", "linear",
    ]  # fmt: skip
    assert spec["layers"][0]["padding"] == 1, "padding='same' with a 3x3 kernel pads 1"
    add = next(layer for layer in spec["layers"] if layer["type"] == "add")
    assert add["inputs"] == ["relu", "sigmoid"], "the Identity is skipped: the add reads the relu"
    assert spec["layers"][7] == {"type": "avgpool", "name": "pool", "kernel": 2, "stride": 1}
    assert not any(layer["type"] == "dropout" for layer in spec["layers"])
    model = hp.Model.from_state_dict(Functional().state_dict(), spec)
    assert model.prunable() == ["a.weight", "b.weight", "head.weight", "out.weight"]


def test_a_residual_network_with_batch_norm_is_traced_and_accepted() -> None:
    torch.manual_seed(0)
    net = TinyResNet()
    set_batch_norm_statistics(net)
    net.train()
    spec = spec_from_module(net, DIGITS)
    assert net.training and net.layer1[0].bn1.training, "the training flags are restored"
    assert int(net.bn1.num_batches_tracked) == 100, "tracing leaves the running statistics alone"
    by_name = {layer["name"]: layer for layer in spec["layers"]}
    assert by_name["bn1"] == {"type": "batchnorm2d", "name": "bn1", "eps": 1e-3, "momentum": 0.2}
    assert by_name["layer2.0.downsample.0"]["stride"] == 2 and by_name["layer2.0.downsample.0"]["inputs"]
    adds = [layer for layer in spec["layers"] if layer["type"] == "add"]
    assert [a["inputs"] for a in adds] == [["layer1.0.bn2", "relu"], ["layer2.0.bn2", "layer2.0.downsample.1"]]
    assert "avgpool" in by_name and by_name["avgpool"]["type"] == "global_avgpool"
    state = net.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state)
    model = hp.Model.from_state_dict(state, spec)  # the counters are extra tensors, ignored
    assert model.prunable() == [
        "conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer2.0.conv1.weight",
        "layer2.0.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight",
    ]  # fmt: skip
    kept = model.state_dict()
    assert "bn1.num_batches_tracked" not in kept
    np.testing.assert_array_equal(kept["layer2.0.downsample.1.running_var"], state["layer2.0.downsample.1.running_var"])


class Wrap(nn.Module):
    """A conv, then `inner` at `body`, then a classifier on the pooled map."""

    def __init__(self, inner: nn.Module, channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Sequential(inner)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))


class Cat(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1)


class InPlaceAdd(nn.Module):
    def forward(self, x):
        y = x.relu()
        y.add_(x)
        return y


@pytest.mark.parametrize(
    ("inner", "channels", "expected"),
    [
        (nn.Conv2d(4, 4, 3, padding=1, groups=2), 4, "nn.Conv2d at 'body.0' has groups=2"),
        (nn.Conv2d(4, 4, 3, padding=2, dilation=2), 4, "nn.Conv2d at 'body.0' has dilation=(2, 2)"),
        (nn.Conv2d(4, 4, (3, 1), padding=(1, 0)), 4, "nn.Conv2d at 'body.0' has kernel_size=(3, 1)"),
        (nn.GELU(approximate="tanh"), 4, "nn.GELU at 'body.0' has approximate='tanh'"),
        (nn.LeakyReLU(), 4, "nn.LeakyReLU at 'body.0'"),
        (nn.MaxPool2d(3, ceil_mode=True), 4, "nn.MaxPool2d at 'body.0' has ceil_mode=True"),
        (nn.BatchNorm2d(4, affine=False), 4, "nn.BatchNorm2d at 'body.0' has affine=False"),
        (Cat(), 8, "torch.cat at 'body.0' (node 'cat')"),
        (InPlaceAdd(), 4, "the in-place Tensor.add_() at 'body.0' (node 'add_')"),
    ],
)
def test_what_the_spec_cannot_say_is_an_input_error_naming_it(inner: nn.Module, channels: int, expected: str) -> None:
    with pytest.raises(hp.InputError) as caught:
        spec_from_module(Wrap(inner, channels), DIGITS)
    message = str(caught.value)
    assert message.startswith("spec_from_module: ") and expected in message, message
    assert "; supported: nn.Conv2d (groups=1, dilation=1" in message and "\n" not in message


def test_a_recurrent_module_is_refused_by_name() -> None:
    class WithLstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.rnn = nn.LSTM(72, 10)

        def forward(self, x):
            out, _ = self.rnn(self.conv(x).flatten(1))
            return out

    with pytest.raises(hp.InputError, match=r"nn\.LSTM at 'rnn'.*; supported: "):
        spec_from_module(WithLstm(), DIGITS)


def test_bad_example_inputs_and_outputs_are_input_errors() -> None:
    with pytest.raises(
        hp.InputError, match=r"example_input must be an image batch tensor \[N, C, H, W\], got \(8, 8\)"
    ):
        spec_from_module(SmallCnn(), torch.zeros(8, 8))
    with pytest.raises(hp.InputError, match=r"SmallCnn fails on an input of shape \[1, 1, 12, 12\]: .*mat1 and mat2"):
        spec_from_module(SmallCnn(), torch.zeros(1, 1, 12, 12))
    with pytest.raises(hp.InputError, match="pass example_input="):
        prune_module(SmallCnn(), "magnitude", 0.5)


def test_magnitude_prunes_the_module_in_place_to_the_exact_sparsity() -> None:
    torch.manual_seed(0)
    net = TinyResNet()
    dense = {k: v.clone() for k, v in net.state_dict().items()}
    result = prune_module(net, "magnitude", 0.75, example_input=DIGITS)
    assert isinstance(result, hp.PruneResult) and result.weights is None
    names = list(result.masks)
    total = sum(dense[n].numel() for n in names)
    zeros = 0
    for name in names:
        layer = net.get_submodule(name.rsplit(".", 1)[0])
        assert hasattr(layer, "weight_mask") and hasattr(layer, "weight_orig"), name
        np.testing.assert_array_equal(layer.weight_mask.numpy(), result.masks[name].astype(np.float32))
        torch.testing.assert_close(layer.weight_orig, dense[name], rtol=0, atol=0)  # magnitude moves nothing
        zeros += int((layer.weight == 0).sum())
    assert zeros == round(0.75 * total) and result.sparsity == zeros / total
    # The module computes with the masked weights; batch norm is untouched.
    assert torch.equal(net.fc.weight, dense["fc.weight"] * net.fc.weight_mask)
    assert torch.equal(net.bn1.running_var, dense["bn1.running_var"])


def test_obs_moves_the_kept_weights_of_the_module() -> None:
    torch.manual_seed(0)
    net = SmallCnn()
    spec = spec_from_module(net, DIGITS)
    dense = {k: v.clone() for k, v in net.state_dict().items()}
    model = hp.Model.from_state_dict(dense, spec)
    result = prune_module(net, "obs", 0.75, dataset="digits", example_input=DIGITS, calib_samples=256)
    assert result.weights is not None, "obs moves the weights it keeps"
    for name, new in result.weights.items():
        layer = net.get_submodule(name.rsplit(".", 1)[0])
        keep = torch.from_numpy(result.masks[name].astype(bool))
        np.testing.assert_array_equal(layer.weight.detach().numpy(), np.where(result.masks[name] != 0, new, 0))
        assert not torch.equal(layer.weight_orig[keep], dense[name][keep]), f"{name}: kept weights updated"
    # The pruned module, read back, scores as hyperprune's pruned model.
    again = hp.Model.from_state_dict(effective_state_dict(net), spec)
    assert hp.evaluate(again, dataset="digits") == hp.evaluate(model, result, dataset="digits")


def test_batch_norm_statistics_re_estimated_by_the_prune_reach_the_module() -> None:
    if "bn_recalibrate" not in inspect.signature(hp.prune).parameters:
        pytest.skip("this hyperprune.prune does not re-estimate batch-norm statistics")
    torch.manual_seed(0)
    net = TinyResNet()
    set_batch_norm_statistics(net)
    spec = spec_from_module(net, DIGITS)
    before = net.bn1.running_var.clone()
    result = prune_module(net, "magnitude", 0.5, example_input=DIGITS, dataset="digits", bn_recalibrate=256)
    assert not torch.equal(net.bn1.running_var, before)
    np.testing.assert_array_equal(net.bn1.running_var.numpy(), result.model.state_dict()["bn1.running_var"])
    again = hp.Model.from_state_dict(effective_state_dict(net), spec)
    assert hp.evaluate(again, dataset="digits") == hp.evaluate(again, result, dataset="digits")


def test_a_module_pruned_twice_keeps_both_masks() -> None:
    torch.manual_seed(0)
    net = SmallCnn()
    first = prune_module(net, "magnitude", 0.5, example_input=DIGITS)
    second = prune_module(net, "magnitude", 0.75, example_input=DIGITS)
    for name, mask in second.masks.items():
        layer = net.get_submodule(name.rsplit(".", 1)[0])
        combined = (first.masks[name] != 0) & (mask != 0)
        np.testing.assert_array_equal(layer.weight_mask.numpy() != 0, combined)
    kept = sum(int(m.sum()) for m in second.masks.values())
    total = sum(m.size for m in second.masks.values())
    assert total - kept == round(0.75 * total)


def read_fashion_mnist(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """A Fashion-MNIST split (``train``, ``t10k``) as hyperprune loads it (``hp.load_dataset``):
    [N, 1, 28, 28] floats x / 255, and the labels."""
    data = hp.load_dataset("fashion-mnist")
    return data.train if split == "train" else data.test


@pytest.mark.skipif(not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason="no Fashion-MNIST files")
def test_hyperprune_scores_the_traced_module_as_torch_does() -> None:
    """The spec computes what the module computes: the same test accuracy and loss on
    Fashion-MNIST from PyTorch and from hyperprune, before and after pruning."""
    torch.manual_seed(3)
    net = nn.Sequential(Functional28(), nn.Identity())
    # A short fit (a few seconds), so that the predictions are not one class.
    train_images, train_labels = read_fashion_mnist("train")
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for step in range(80):
        batch = slice(128 * step, 128 * (step + 1))
        optimiser.zero_grad()
        F.cross_entropy(net(torch.from_numpy(train_images[batch])), torch.from_numpy(train_labels[batch])).backward()
        optimiser.step()
    images, labels = read_fashion_mnist("t10k")
    example = torch.from_numpy(images[:2])
    spec = spec_from_module(net, example)

    def torch_scores() -> Tuple[float, float]:
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(torch.from_numpy(images[i : i + 2000])) for i in range(0, len(images), 2000)])
        target = torch.from_numpy(labels)
        return float((logits.argmax(1) == target).double().mean()), float(F.cross_entropy(logits.double(), target))

    for step in ("dense", "pruned"):
        accuracy, loss = torch_scores()
        scores = hp.evaluate(hp.Model.from_state_dict(effective_state_dict(net), spec), dataset="fashion-mnist")
        assert scores["samples"] == len(labels) and accuracy > 0.4, (step, accuracy)
        # Float32 sums in another order: at most a couple of near-ties may fall the other way.
        assert abs(scores["accuracy"] - accuracy) <= 2 / len(labels), (step, scores, accuracy)
        assert scores["loss"] == pytest.approx(loss, rel=1e-4), (step, scores, loss)
        if step == "dense":
            prune_module(net, "magnitude", 0.5, example_input=example)


class Functional28(nn.Module):
    """Every supported kind on 28x28 inputs: strided conv, batch norm, the activations,
    both poolings, a residual add, flatten, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 5, stride=2, padding=2)  # 14x14
        self.bn = nn.BatchNorm2d(6)
        self.block = BasicBlock(6, 6)
        self.down = nn.Conv2d(6, 8, 3)  # 12x12
        self.pool = nn.MaxPool2d(2)  # 6x6
        self.avg = nn.AvgPool2d(3, stride=1)  # 4x4
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.tanh(self.bn(self.stem(x)))
        x = self.block(x)
        x = self.avg(F.gelu(self.pool(self.down(x))))
        x = torch.sigmoid(self.fc1(x.view(x.size(0), -1)))
        return self.fc2(x)
