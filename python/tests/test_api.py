"""The Python API against the `hyperprune` command line: same plugins, same masks, same scores.

Needs the release build of the workspace (`cargo build --release`) for the `hyperprune` binary that trains the test model and gives the reference masks.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import hyperprune as hp

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "target" / "release" / "hyperprune"
SHIPPED = ["random", "magnitude", "lamp", "lap", "synflow", "obs", "woodfisher", "chita", "maskopt", "hypernet"]


def run_cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HYPERPRUNE_PLUGIN_PATH"}
    done = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CLI.is_file():
        pytest.fail(f"{CLI} is missing: run `cargo build --release` first")
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    run_cli("zoo", "train", "--arch", "cnn-digits", "--members", "1", "--epochs", "1", "--out", str(out))
    return out / "members" / "0000.safetensors"


@pytest.fixture(scope="session")
def model(model_path: Path) -> hp.Model:
    return hp.Model.load(model_path)


def read_masks(path: Path) -> dict:
    """A masks file `hyperprune prune` writes (safetensors, u8), without a safetensors dependency."""
    import json
    import struct

    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    masks = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        assert entry["dtype"] == "U8"
        masks[name] = np.frombuffer(body[start:end], dtype=np.uint8).reshape(entry["shape"])
    return masks


def test_plugins_lists_every_shipped_pruner() -> None:
    names = [p.name for p in hp.plugins()]
    for name in SHIPPED:
        assert name in names, f"{name} missing from {names}"
    obs = hp.plugin_info("obs")
    assert obs.data == "calibration" and obs.version and obs.description
    assert hp.plugin_info("magnitude").data == "none"
    assert hp.plugin_info("hypernet").learnable


def test_magnitude_prunes_to_the_exact_sparsity(model: hp.Model) -> None:
    result = hp.prune(model, "magnitude", 0.9)
    kept = sum(int(m.sum()) for m in result.masks.values())
    total = sum(m.size for m in result.masks.values())
    assert result.pruner == "magnitude" and result.weights is None and 0 <= result.seconds <= result.host_seconds
    # 90% of the prunable weights, rounded to a whole weight.
    assert total - kept == round(0.9 * total)
    assert result.sparsity == pytest.approx((total - kept) / total, abs=0)
    for name, mask in result.masks.items():
        assert mask.dtype == np.uint8 and mask.shape == model.state_dict()[name].shape


def test_numpy_in_numpy_out(model: hp.Model) -> None:
    state = model.state_dict()
    again = hp.Model.from_state_dict(state, "cnn-digits")
    result = hp.prune(again, "magnitude", 0.5)
    pruned = result.apply(state)
    assert set(pruned) == set(state)
    for name, array in pruned.items():
        assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.shape == state[name].shape
        if name in result.masks:
            np.testing.assert_array_equal(array, np.where(result.masks[name] != 0, state[name], 0))
        else:
            np.testing.assert_array_equal(array, state[name])


def test_masks_are_bit_identical_to_the_cli(model: hp.Model, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned.safetensors"
    run_cli("prune", "--model", str(model_path), "--pruner", "magnitude", "--sparsity", "0.9", "--out", str(out))
    cli_masks = read_masks(tmp_path / "pruned.masks.safetensors")
    result = hp.prune(model, "magnitude", 0.9)
    assert set(cli_masks) == set(result.masks)
    for name, mask in cli_masks.items():
        np.testing.assert_array_equal(result.masks[name], mask)


def test_obs_scores_match_the_cli_eval(model: hp.Model, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "obs.safetensors"
    printed = run_cli(
        "prune", "--model", str(model_path), "--pruner", "obs", "--sparsity", "0.9",
        "--dataset", "digits", "--eval", "--out", str(out),
    )  # fmt: skip
    line = next(l for l in printed.splitlines() if l.startswith("test accuracy on digits"))
    dense, pruned = (float(x) for x in re.findall(r"dense ([\d.]+)% -> pruned ([\d.]+)%", line)[0])
    result = hp.prune(model, "obs", 0.9, dataset="digits")
    assert result.weights is not None, "obs moves the weights it keeps"
    # The CLI prints percentages with two decimals: compare at that precision.
    assert round(100 * hp.evaluate(model)["accuracy"], 2) == dense
    assert round(100 * hp.evaluate(model, result)["accuracy"], 2) == pruned


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: hp.prune(m, "no-such-pruner", 0.9), "unknown pruner 'no-such-pruner' (installed: "),
        (lambda m: hp.prune(m, "magnitude", 1.5), "sparsity must be in [0, 1), got 1.5"),
        (lambda m: hp.Model.load("/no/such/model.safetensors"), "model file not found"),
        (lambda m: hp.prune(m, "obs", 0.5), "pruner 'obs' needs calibration data"),
        (lambda m: hp.evaluate(m, dataset="no-such-dataset"), "no-such-dataset"),
    ],
)
def test_bad_input_raises_input_error_with_one_line(model: hp.Model, call, message: str) -> None:
    with pytest.raises(hp.InputError) as caught:
        call(model)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, hp.HyperpruneError)


def test_an_unknown_plugin_name_is_input_error_naming_those_installed() -> None:
    with pytest.raises(hp.InputError, match=r"unknown pruner 'nope' \(installed: .*magnitude"):
        hp.plugin_info("nope")


def test_a_file_that_is_not_a_plugin_raises_plugin_error(tmp_path: Path) -> None:
    bogus = tmp_path / "libnot_a_plugin.so"
    bogus.write_bytes(b"not a library")
    with pytest.raises(hp.PluginError):
        hp.load_plugin(bogus)


def test_a_third_party_plugin_loads_and_prunes(model: hp.Model) -> None:
    example = ROOT / "examples" / "row-magnitude"
    target = ROOT / "target" / "fixtures"
    lib = target / "debug" / "librow_magnitude.so"
    # Built as the Rust integration tests build it; cargo rebuilds it when the SDK changed,
    # so the plugin never lags behind the host it is loaded into.
    try:
        built = subprocess.run(
            ["cargo", "build", "-q", "--target-dir", str(target)], cwd=example, capture_output=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"could not build examples/row-magnitude: {e}")
    if built.returncode != 0 or not lib.is_file():
        pytest.skip(f"could not build examples/row-magnitude: {built.stderr.decode()[-300:]}")
    info = hp.load_plugin(lib)
    assert info.name in [p.name for p in hp.plugins()]
    result = hp.prune(model, info.name, 0.5)
    assert result.sparsity == pytest.approx(0.5, abs=0.05)


def test_torch_tensors_in_torch_tensors_out(model: hp.Model) -> None:
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in model.state_dict().items()}
    result = hp.prune(hp.Model.from_state_dict(state, "cnn-digits"), "magnitude", 0.9)
    pruned = result.apply(state)
    for name, tensor in pruned.items():
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
        if name in result.masks:
            assert int((tensor != 0).sum()) <= int(result.masks[name].sum())


def test_a_learnable_pruner_prunes_with_a_fitted_state(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    run_cli("zoo", "train", "--arch", "cnn-digits", "--members", "4", "--epochs", "1", "--out", str(zoo), "-q")
    state = tmp_path / "hypernet.state"
    run_cli("fit", "--pruner", "hypernet", "--zoo", str(zoo), "--out", str(state), "--opt", "steps=20", "-q")
    model = hp.Model.load(zoo / "members" / "0000.safetensors")
    with pytest.raises(hp.InputError, match="must be fitted first"):
        hp.prune(model, "hypernet", 0.9)
    result = hp.prune(model, "hypernet", 0.9, options={"state": state})
    assert result.pruner == "hypernet" and result.sparsity == pytest.approx(0.9, abs=1e-3)
    # refine: the same state's mask distilled on the inputs it stores, no dataset given.
    refined = hp.prune(model, "hypernet", 0.9, options={"state": state, "refine": 3})
    assert refined.sparsity == pytest.approx(0.9, abs=1e-3)
    assert any((refined.masks[n] != result.masks[n]).any() for n in result.masks), "three steps swap weights"
