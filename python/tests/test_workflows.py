"""The long calls from Python: zoos, fit and bench, arrays as datasets, logging, progress
and Ctrl-C; each against what the `hyperprune` command line does on the same input."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hyperprune as hp

from test_api import run_cli


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> hp.Zoo:
    out = tmp_path_factory.mktemp("workflows") / "zoo"
    return hp.train_zoo(out, "cnn-digits", "digits", members=4, epochs=1, split=(0.5, 0.25, 0.25), seed=3)


@pytest.fixture(scope="module")
def digits() -> hp.DatasetArrays:
    return hp.load_dataset("digits")


def test_a_zoo_trained_from_python_is_the_zoo_the_cli_trains(zoo: hp.Zoo, tmp_path: Path) -> None:
    assert (zoo.arch, zoo.dataset, len(zoo)) == ("cnn-digits", "digits", 4)
    assert [len(zoo.split(s)) for s in ("train", "val", "test")] == [2, 1, 1]
    cli = tmp_path / "cli-zoo"
    run_cli("zoo", "train", "--arch", "cnn-digits", "--dataset", "digits", "--members", "4", "--epochs", "1",
            "--split", "0.5,0.25,0.25", "--seed", "3", "--out", str(cli), "-q")  # fmt: skip
    again = hp.Zoo.load(cli)
    for mine, theirs in zip(zoo.members, again.members):
        assert mine["test_accuracy"] == theirs["test_accuracy"]
    a, b = zoo.model(0).state_dict(), again.model(0).state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert [m.arch for m in zoo.models("test")] == ["cnn-digits"]


def test_a_directory_without_a_zoo_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(hp.InputError, match=str(tmp_path)):
        hp.Zoo.load(tmp_path)


def test_dataset_arrays_evaluate_as_the_named_dataset(zoo: hp.Zoo, digits: hp.DatasetArrays) -> None:
    model = zoo.model(0)
    x, y = digits.test
    assert x.dtype == np.float32 and x.ndim == 4 and len(x) == len(y) == 450
    by_name = hp.evaluate(model, dataset="digits")
    by_arrays = hp.evaluate(model, dataset=(x, y))
    assert by_arrays == by_name
    # One channel may come without its axis.
    assert hp.evaluate(model, dataset=(x[:, 0], y)) == by_name


def test_calibration_arrays_drive_a_data_aware_pruner(zoo: hp.Zoo, digits: hp.DatasetArrays) -> None:
    model = zoo.model(0)
    x, y = digits.train
    first = hp.prune(model, "obs", 0.75, dataset=(x[:256], y[:256]), calib_samples=256)
    again = hp.prune(model, "obs", 0.75, dataset=(x[:256], y[:256]), calib_samples=256)
    assert first.weights is not None and first.sparsity == pytest.approx(0.75, abs=1e-3)
    for name in first.masks:
        np.testing.assert_array_equal(first.masks[name], again.masks[name])
    with pytest.raises(hp.InputError, match=r"shape \[1, 8, 8\]"):
        hp.prune(model, "obs", 0.75, dataset=(np.zeros((4, 1, 9, 9), np.float32), [0, 1, 2, 3]))
    with pytest.raises(hp.InputError, match="label 10 is outside"):
        hp.prune(model, "obs", 0.75, dataset=(x[:2], [0, 10]))
    with pytest.raises(hp.InputError, match="isolate"):
        hp.prune(model, "obs", 0.75, dataset=(x[:2], y[:2]), isolate=True)


def test_fit_then_bench_from_python_gives_the_cli_rows(zoo: hp.Zoo, tmp_path: Path, caplog) -> None:
    state = tmp_path / "hn.state"
    with caplog.at_level(logging.INFO, logger="hyperprune"):
        assert hp.fit("hypernet", zoo, state, {"steps": 10}, seed=1) == state
    assert state.is_file() and any("fitting hypernet" in r.getMessage() for r in caplog.records)
    rows = hp.bench(zoo, ["magnitude", "hypernet"], [2, 4], tmp_path / "run", options={"hypernet": {"state": state}})
    if not isinstance(rows, list):  # a pandas DataFrame
        rows = rows.to_dict("records")
    assert len(rows) == 1 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    cli_out = tmp_path / "cli-run"
    run_cli("bench", "--zoo", str(zoo.path), "--pruners", "magnitude,hypernet", "--compression", "2,4",
            "--opt", f"hypernet.state={state}", "--isolate", "none", "--out", str(cli_out), "-q")  # fmt: skip
    cli_rows = [json.loads(l) for l in (cli_out / "results.jsonl").read_text().splitlines()]
    key = lambda r: (r["member"], r["pruner"], r["compression"])  # noqa: E731
    mine = {key(r): r["pruned_accuracy"] for r in rows}
    assert mine == {key(r): r["pruned_accuracy"] for r in cli_rows}
    # A bench into the same folder resumes: nothing new to run, the same rows.
    again = hp.bench(zoo, ["magnitude", "hypernet"], [2, 4], tmp_path / "run", options={"hypernet.state": state})
    assert len(again) == len(rows)


def test_bad_bench_and_fit_arguments_are_input_errors(zoo: hp.Zoo, tmp_path: Path) -> None:
    with pytest.raises(hp.InputError, match="unknown pruner 'nope'"):
        hp.bench(zoo, "nope", [2], tmp_path / "run")
    with pytest.raises(hp.InputError, match="out= is required"):
        hp.bench(zoo, "magnitude", [2])
    with pytest.raises(hp.InputError, match="magnitude"):
        hp.fit("magnitude", zoo, tmp_path / "m.state")
    with pytest.raises(hp.InputError, match="--compression"):
        hp.bench(zoo, "magnitude", [0.5], tmp_path / "run2")


def test_progress_reaches_a_tqdm_bar(zoo: hp.Zoo, tmp_path: Path) -> None:
    tqdm = pytest.importorskip("tqdm")
    seen = []
    real = tqdm.auto.tqdm

    class Recording(real):  # type: ignore[misc, valid-type]
        def refresh(self, *args, **kwargs):  # noqa: ANN002, ANN003
            seen.append((self.n, self.total))
            return super().refresh(*args, **kwargs)

    tqdm.auto.tqdm = Recording
    try:
        hp.bench(zoo, "magnitude", [2, 4, 8], tmp_path / "run", progress=True)
    finally:
        tqdm.auto.tqdm = real
    assert seen and seen[-1] == (3, 3)


def test_ctrl_c_cancels_a_long_fit_and_keeps_its_checkpoint(zoo: hp.Zoo, tmp_path: Path) -> None:
    # An isolated bench first: the command line catches Ctrl-C for its workers, and from
    # Python that must not take SIGINT away from Python afterwards.
    assert len(hp.bench(zoo, "magnitude", [2], tmp_path / "run", isolate=True)) == 1
    state = tmp_path / "long.state"
    checkpoint = Path(f"{state}.checkpoint")
    stop = threading.Event()

    def interrupt_once_checkpointed() -> None:
        # Ctrl-C once the fit has written its first checkpoint (step 50), however loaded the
        # machine is; at the latest after 120 s.
        deadline = time.monotonic() + 120
        while not stop.is_set() and not checkpoint.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not stop.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_once_checkpointed, daemon=True)
    # Ctrl-C as an interactive Python has it, however this process was started: a shell
    # that starts a job in the background leaves SIGINT ignored, and Python then keeps it so.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            hp.fit("hypernet", zoo, state, {"steps": 1_000_000}, seed=1)
    finally:
        stop.set()
        interrupter.join()
        signal.signal(signal.SIGINT, previous)
    # The fit stopped at the interrupt rather than running its million steps...
    assert time.monotonic() - started < 180
    # ...kept what it had learnt for a resume, and wrote no final state.
    assert Path(f"{state}.checkpoint").is_file() and not state.exists()
    # The interrupt is over: the next call runs to the end.
    assert hp.prune(zoo.model(0), "magnitude", 0.5).sparsity == pytest.approx(0.5, abs=0.01)

