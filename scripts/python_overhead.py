"""What calling a pruner from Python costs beyond the host's own work.

For each pruner, prunes one model `--calls` times (after `--warmup` calls) with `hp.prune`
and reports, per call, the median wall time seen by Python, the median `host_seconds` (the
time the same call spends inside the host: checks, plugin, masks applied, which is what
`hyperprune prune` spends in process for the prune itself) and the overhead = (wall - host) /
host: argument conversion, the hand-over to the call thread, and turning the masks into
numpy arrays. With `--cli`, it also runs `hyperprune prune` on the same model `--cli-runs`
times and reports its in-process time: the median wall time of the command less the median
wall time of `hyperprune --version` (starting the process), i.e. what one prune costs from
the command line once it runs (finding and loading the plugins, reading the model, pruning,
writing the masks), and the Python overhead as a fraction of it.

Run from the repository root with the `hyperprune` package importable:
  python3 scripts/python_overhead.py --model ZOO/members/0000.safetensors \
      --pruner magnitude --pruner hypernet:state=hn.state --sparsity 0.75 \
      --cli target/release/hyperprune
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

import hyperprune as hp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a safetensors model with its arch in the metadata")
    parser.add_argument("--pruner", action="append", required=True,
                        help="NAME or NAME:opt=value,opt=value (repeatable)")  # fmt: skip
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--cli", help="the hyperprune executable, to compare with the command line")
    parser.add_argument("--cli-runs", type=int, default=30)
    args = parser.parse_args()

    model = hp.Model.load(args.model)
    print(f"model {args.model} ({model.arch}), sparsity {args.sparsity}, {args.calls} calls each, "
          f"python {platform.python_version()}")  # fmt: skip
    cli_header = " command line, in process (ms) | overhead / command line |" if args.cli else ""
    print(f"| pruner | wall, Python (ms) | in the host (ms) | overhead / host |{cli_header}")
    print("| :--- | ---: | ---: | ---: |" + (" ---: | ---: |" if args.cli else ""))
    start_up = _median_wall([args.cli, "--version"], args.cli_runs) if args.cli else 0.0
    for spec in args.pruner:
        name, _, rest = spec.partition(":")
        options = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        walls, hosts = [], []
        for i in range(args.warmup + args.calls):
            start = time.perf_counter()
            result = hp.prune(model, name, args.sparsity, options=options)
            wall = time.perf_counter() - start
            if i >= args.warmup:
                walls.append(wall)
                hosts.append(result.host_seconds)
        wall, host = statistics.median(walls), statistics.median(hosts)
        row = f"| {name} | {wall * 1e3:.3f} | {host * 1e3:.3f} | {(wall - host) / host * 100:.1f} % |"
        if args.cli:
            with tempfile.TemporaryDirectory() as folder:
                command = [args.cli, "prune", "--model", args.model, "--pruner", name, "--sparsity",
                           str(args.sparsity), "--out", str(Path(folder) / "pruned.safetensors"), "-q"]  # fmt: skip
                for key, value in options.items():
                    command += ["--opt", f"{key}={value}"]
                cli = _median_wall(command, args.cli_runs) - start_up
            row += f" {cli * 1e3:.2f} | {(wall - host) / cli * 100:.2f} % |"
        print(row)


def _median_wall(command: List[str], runs: int) -> float:
    """Median wall time of `runs` runs of `command` (after one unmeasured run)."""
    walls = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        if i:
            walls.append(time.perf_counter() - start)
    return statistics.median(walls)


if __name__ == "__main__":
    main()
