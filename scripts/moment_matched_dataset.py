"""Writes a copy of an MNIST-format dataset whose train images are synthetic: Gaussian draws
with the real train split's pixel mean and covariance (784 + 784^2 numbers), rounded and
clipped to bytes. The test split is copied unchanged, so a bench that calibrates on the copy
evaluates on the real test images.

What it is for: measuring what a data-aware pruner keeps when its calibration images carry
only the input moments, e.g. the mask ceiling without images:

  python3 scripts/moment_matched_dataset.py --from /usr/share/datasets/fashion-mnist --out synth
  hyperprune bench --zoo zoos/fmnist-cnn-s --pruners maskopt --compression 4,8,16 \
      --data-dir synth --out runs/cnn-s-maskopt-moments

(the results are in docs/research/hypernet-log.md, "The mask ceiling from input moments").
The labels of the synthetic images are uniform noise: use it with pruners that distil from the
dense model (maskopt) or read only inputs (obs), not with ones that read labels.

Needs numpy. Deterministic for a given --seed.
"""

import argparse
import gzip
import pathlib
import shutil
import struct

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_images(path):
    data = gzip.open(path).read()
    magic, n, h, w = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise SystemExit(f"{path}: not an idx3 image file (magic {magic}, expected 2051)")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, h * w), (h, w)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="folder with the four MNIST-format .gz files")
    parser.add_argument("--out", required=True, help="folder to write (created)")
    parser.add_argument("--images", type=int, default=60000, help="synthetic train images (60000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source, out = pathlib.Path(args.source), pathlib.Path(args.out)
    for f in FILES.values():
        if not (source / f).exists():
            raise SystemExit(f"{source / f}: missing (expected the four MNIST-format files {sorted(FILES.values())})")
    out.mkdir(parents=True, exist_ok=True)
    real, (h, w) = read_images(source / FILES["train_images"])
    x = real.astype(np.float64) / 255.0
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    factor = vectors * np.sqrt(np.clip(values, 0.0, None))
    rng = np.random.default_rng(args.seed)
    n = args.images
    draws = mean + rng.standard_normal((n, h * w)) @ factor.T
    images = np.clip(np.round(draws * 255.0), 0, 255).astype(np.uint8)
    with gzip.open(out / FILES["train_images"], "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w))
        f.write(images.tobytes())
    with gzip.open(out / FILES["train_labels"], "wb") as f:
        f.write(struct.pack(">II", 2049, n))
        f.write(rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    for key in ("test_images", "test_labels"):
        shutil.copy(source / FILES[key], out / FILES[key])
    print(f"wrote {out}: {n} synthetic train images ({h}x{w}, mean {images.mean() / 255:.3f} against the real "
          f"{x.mean():.3f}), the real test split")


if __name__ == "__main__":
    main()
