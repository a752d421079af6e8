"""OBS on a PyTorch `cnn-s` from Python and from the command line: the same pruned accuracy.

Trains (or loads) a PyTorch copy of hyperprune's `cnn-s` preset on Fashion-MNIST, saves its
state dict as safetensors (no metadata, so the command line takes `--arch cnn-s`), and prunes
it to 90 % sparsity with OBS three ways:

  python  hp.prune(hp.Model.from_state_dict(state_dict, "cnn-s"), "obs", 0.9,
          dataset="fashion-mnist", calib_samples=1024), scored by hp.evaluate
  cli     target/release/hyperprune prune --model FILE --arch cnn-s --pruner obs --sparsity 0.9
          --dataset fashion-mnist --calib-samples 1024 --eval, its printed accuracy parsed
  torch   hyperprune.torch.prune_module on the module itself (arch from spec_from_module),
          the pruned module scored by PyTorch on the same test split

and prints the three test accuracies and whether they agree (the command line prints
percentages with two decimals, so python and cli are compared at that precision).

`cnn-s` (core/src/arch/presets.rs): conv 8@5x5, maxpool 2, tanh, conv 6@5x5, maxpool 2, tanh,
conv 4@2x2, tanh, flatten, linear 20, tanh, linear 10, on 1x28x28; as an nn.Sequential its
tensor names (`0.weight`, `3.weight`, `6.weight`, `9.weight`, `11.weight`, biases) are the
preset's. Fashion-MNIST is read from /usr/share/datasets/fashion-mnist (IDX, gzipped) and
normalised as hyperprune's loader does: x / 255.

Run from the repository root, with the `hyperprune` package importable and torch installed:
  python3 scripts/python_torch_obs.py                 # train 1 epoch, then prune
  python3 scripts/python_torch_obs.py --load FILE     # prune a saved cnn-s state dict
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import hyperprune as hp
from hyperprune.torch import prune_module

ROOT = Path(__file__).resolve().parents[1]


def cnn_s() -> nn.Sequential:
    """hyperprune's `cnn-s` preset as a PyTorch module with the preset's tensor names."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.Tanh(),
        nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), nn.Tanh(),
        nn.Conv2d(6, 4, 2), nn.Tanh(),
        nn.Flatten(), nn.Linear(36, 20), nn.Tanh(), nn.Linear(20, 10),
    )  # fmt: skip


def read_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `train` or `t10k` as hyperprune loads it (`hp.load_dataset`): images
    [N, 1, 28, 28] as x / 255 (float32), labels."""
    data = hp.load_dataset("fashion-mnist")
    return data.train if split == "train" else data.test


def write_safetensors(path: Path, tensors: Dict[str, np.ndarray]) -> None:
    """A safetensors file of float32 tensors, without metadata."""
    header: Dict[str, object] = {}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    """The float32 tensors of a safetensors file."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor '{name}' is {entry['dtype']}, expected F32")
        start, end = entry["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(entry["shape"]).copy()
    return out


def train(net: nn.Module, epochs: int, seed: int) -> None:
    """Adam (lr 3e-3), mini-batches of 64, cross-entropy, on the train split."""
    images, labels = read_split("train")
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).numpy()
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            F.cross_entropy(net(torch.from_numpy(images[batch])), torch.from_numpy(labels[batch])).backward()
            optimiser.step()
    net.eval()


def torch_accuracy(net: nn.Module) -> float:
    images, labels = read_split("t10k")
    net.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [net(torch.from_numpy(images[i : i + 2500])).argmax(1) for i in range(0, len(labels), 2500)]
        )
    return float((predicted == torch.from_numpy(labels)).double().mean())


def cli_accuracy(cli: Path, model: Path, out: Path) -> Tuple[float, float]:
    """Dense and pruned accuracy (percent) as `hyperprune prune --eval` prints them."""
    command = [
        str(cli), "prune", "--model", str(model), "--arch", "cnn-s", "--pruner", "obs", "--sparsity", "0.9",
        "--dataset", "fashion-mnist", "--calib-samples", "1024", "--eval", "--out", str(out), "-q",
    ]  # fmt: skip
    print("$", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"hyperprune prune failed ({done.returncode}): {done.stderr.strip()}")
    line = next((row for row in done.stdout.splitlines() if row.startswith("test accuracy on fashion-mnist")), None)
    if line is None:
        raise SystemExit(f"no accuracy line in the output of hyperprune prune:\n{done.stdout}")
    print(line)
    dense, pruned = re.findall(r"dense ([\d.]+)% -> pruned ([\d.]+)%", line)[0]
    return float(dense), float(pruned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", type=Path, help="a saved cnn-s state dict (safetensors) instead of training")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, help="folder for the model files (default: a temporary one)")
    parser.add_argument("--cli", type=Path, default=ROOT / "target" / "release" / "hyperprune")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="python-torch-obs-"))
    out.mkdir(parents=True, exist_ok=True)

    net = cnn_s()
    if args.load:
        net.load_state_dict({k: torch.from_numpy(v) for k, v in read_safetensors(args.load).items()})
        model_file = args.load
        print(f"loaded {model_file}")
    else:
        started = time.time()
        train(net, args.epochs, args.seed)
        model_file = out / "cnn-s.safetensors"
        write_safetensors(model_file, {k: v.detach().numpy() for k, v in net.state_dict().items()})
        print(
            f"trained cnn-s on fashion-mnist for {args.epochs} epoch(s) in {time.time() - started:.1f}s: {model_file}"
        )
    net.eval()

    # (1) Python: the state dict, the preset, hp.prune and hp.evaluate.
    state = net.state_dict()
    model = hp.Model.from_state_dict(state, "cnn-s")
    result = hp.prune(model, "obs", 0.9, dataset="fashion-mnist", calib_samples=1024)
    dense_py = hp.evaluate(model, dataset="fashion-mnist")["accuracy"]
    pruned_py = hp.evaluate(model, result, dataset="fashion-mnist")["accuracy"]
    print(f"python: {result!r}; test accuracy dense {100 * dense_py:.2f}% -> pruned {100 * pruned_py:.2f}%")

    # (2) The command line on the saved file.
    dense_cli, pruned_cli = cli_accuracy(args.cli, model_file, out / "cnn-s.obs.safetensors")

    # (3) The module itself: spec from torch.fx, pruned in place, scored by PyTorch.
    module = copy.deepcopy(net)
    dense_torch = torch_accuracy(module)
    torch_result = prune_module(
        module, "obs", 0.9, dataset="fashion-mnist", example_input=torch.zeros(1, 1, 28, 28), calib_samples=1024
    )
    pruned_torch = torch_accuracy(module)
    same_masks = all(np.array_equal(torch_result.masks[n], result.masks[n]) for n in result.masks)
    print(
        f"torch:  prune_module {torch_result!r} (masks equal to python's: {same_masks}); test accuracy by PyTorch "
        f"dense {100 * dense_torch:.2f}% -> pruned {100 * pruned_torch:.2f}%"
    )

    py_vs_cli = round(100 * dense_py, 2) == dense_cli and round(100 * pruned_py, 2) == pruned_cli
    py_vs_torch = abs(pruned_py - pruned_torch) <= 2e-4 and abs(dense_py - dense_torch) <= 2e-4
    print(f"pruned accuracy: python {100 * pruned_py:.2f}%, cli {pruned_cli:.2f}%, torch {100 * pruned_torch:.2f}%")
    print(f"python == cli (two decimals, dense and pruned): {py_vs_cli}")
    print(f"python == torch (within 2 of 10,000 test images, dense and pruned): {py_vs_torch}")
    sys.exit(0 if py_vs_cli and py_vs_torch else 1)


if __name__ == "__main__":
    main()
