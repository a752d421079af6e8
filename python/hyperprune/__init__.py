"""hyperprune from Python: prune CNNs with hyperprune's pruner plugins.

The same plugins and the same code path as the ``hyperprune`` command line (``hyperprune
prune --isolate none`` and ``hyperprune eval``), with numpy arrays in and out::

    import hyperprune as hp
    model = hp.Model.load("digits.safetensors")
    result = hp.prune(model, "magnitude", 0.9)
    print(result.sparsity, hp.evaluate(model, result)["accuracy"])

Plugins are looked for, first name wins, in: ``$HYPERPRUNE_PLUGIN_DIR`` (colon-separated
folders), the ``plugins/`` folder inside this package (filled at build time, see
python/README.md), and the ``target/release`` folder of the checkout this package was built
from, when it is run from that checkout. ``$HYPERPRUNE_PLUGIN_PATH`` (as for the command line)
is searched too.

Long calls (``prune``, ``evaluate``, ``fit``, ``bench``, ``train_zoo``) release the GIL,
stop at Ctrl-C (``KeyboardInterrupt``; a running plugin sees ``cancelled()``), log through
the ``logging`` logger ``"hyperprune"``, and draw a tqdm bar with ``progress=True`` when
tqdm is installed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import HyperpruneError, InputError, PluginError

__all__ = [
    "HyperpruneError",
    "InputError",
    "PluginError",
    "PluginInfo",
    "Model",
    "PruneResult",
    "plugins",
    "plugin_info",
    "load_plugin",
    "plugin_dirs",
    "prune",
    "evaluate",
    "fit",
    "bench",
    "train_zoo",
    "Zoo",
    "DatasetArrays",
    "load_dataset",
]

logger = logging.getLogger("hyperprune")
"""The logger the host's messages go to (info: what a command reports; debug: details)."""

# The tqdm bar of the long call now running with ``progress=True``, if any.
_bar: Any = None


def _emit(records: List[Tuple[int, str, str, int, int, str]]) -> None:
    """Receives the host's events: log lines go to ``logger``, progress to the open bar."""
    for level, target, message, done, total, unit in records:
        if done >= 0:
            if _bar is not None:
                if total >= 0 and _bar.total != total:
                    _bar.total = total
                if unit:
                    _bar.unit = " " + unit
                _bar.n = done
                _bar.refresh()
            continue
        if level >= 10 and logger.isEnabledFor(level):
            logger.log(level, message, extra={"target": target})


_native.set_log_sink(_emit)


class _Progress:
    """A tqdm bar for the duration of one long call, when asked for and tqdm is installed."""

    def __init__(self, enabled: bool, description: str) -> None:
        self.enabled = enabled
        self.description = description

    def __enter__(self) -> "_Progress":
        global _bar
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                logger.warning("progress=True: tqdm is not installed, no bar is drawn")
            else:
                _bar = tqdm(total=None, desc=self.description)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _bar
        if _bar is not None:
            _bar.close()
            _bar = None


def _worker_executable() -> Optional[Path]:
    """The ``hyperprune`` executable that serves ``isolate=True`` calls: ``$HYPERPRUNE_BIN``,
    the one shipped in this package, the checkout's release build, or one on ``PATH``."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("HYPERPRUNE_BIN"), here / "bin" / "hyperprune"]
    checkout = here.parent.parent
    if (checkout / "Cargo.toml").is_file():
        candidates.append(checkout / "target" / "release" / "hyperprune")
    candidates.append(shutil.which("hyperprune"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _isolation(isolate: bool, timeout: float, worker_memory: Optional[int]) -> Optional[Tuple[float, Optional[int]]]:
    if not isolate:
        return None
    exe = _worker_executable()
    if exe is None:
        raise InputError(
            "isolate=True runs the plugin in a `hyperprune` worker process, and no `hyperprune` executable was "
            "found: set $HYPERPRUNE_BIN or put it on PATH"
        )
    _native.set_worker_executable(str(exe))
    return (float(timeout), worker_memory)


def plugin_dirs() -> List[Path]:
    """The folders searched for in-tree plugin files, in order of precedence."""
    dirs: List[Path] = []
    env = os.environ.get("HYPERPRUNE_PLUGIN_DIR")
    if env:
        dirs.extend(Path(d) for d in env.split(os.pathsep) if d)
    here = Path(__file__).resolve().parent
    dirs.append(here / "plugins")
    # Run from a checkout (python/hyperprune/ inside the repository): its release build.
    checkout = here.parent.parent
    if (checkout / "Cargo.toml").is_file():
        dirs.append(checkout / "target" / "release")
    return dirs


_native.set_plugin_dirs([str(d) for d in plugin_dirs()])


class PluginInfo:
    """What a pruner plugin says about itself.

    Attributes:
        name: the pruner's name, as ``prune(..., pruner=NAME)`` takes it.
        version: the plugin's own version.
        description: one line.
        data: what it needs to prune: ``"none"`` (data-free) or ``"calibration"`` (pass
            ``dataset=``); learnable pruners also need a fitted state (``options={"state":
            FILE}``), see ``learnable``.
        learnable: whether it must be fitted first (``hyperprune fit``).
        options: the accepted options, as dicts with ``name``, ``kind``, ``default``, ``doc``.
        path: the plugin file.
    """

    def __init__(self, info: Dict[str, Any], path: str) -> None:
        caps = info.get("capabilities", {})
        self.name: str = info["name"]
        self.version: str = info["version"]
        self.description: str = info["description"]
        self.learnable: bool = bool(caps.get("learnable", False))
        self.data: str = "calibration" if caps.get("needs_data", False) else "none"
        self.options: List[Dict[str, Any]] = list(info.get("options", []))
        self.capabilities: Dict[str, Any] = dict(caps)
        self.path: str = path

    def __repr__(self) -> str:
        return f"PluginInfo(name={self.name!r}, version={self.version!r}, data={self.data!r})"


def plugins() -> List[PluginInfo]:
    """Every pruner plugin found (see the module docstring for where)."""
    return [PluginInfo(json.loads(info), path) for info, path in _native.plugins()]


def plugin_info(name: str) -> PluginInfo:
    """The plugin called ``name``.

    Raises:
        InputError: no plugin has that name (the message lists those installed).
    """
    found = [p for p in plugins() if p.name == name]
    if not found:
        raise InputError(_native.unknown_plugin(name))
    return found[0]


def load_plugin(path: Union[str, os.PathLike]) -> PluginInfo:
    """Loads a third-party plugin file (same ABI checks as ``hyperprune --plugin FILE``).

    It takes precedence over an in-tree plugin of the same name.

    Raises:
        PluginError: the file is not a loadable hyperprune plugin, or was built against an
            incompatible SDK (the message says which).
    """
    name = _native.load_plugin(str(path))
    return plugin_info(name)


def _as_numpy(value: Any) -> np.ndarray:
    """A float32 C-contiguous copy of an array-like (numpy, ``__array__``, ``.numpy()``)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif not hasattr(value, "__array__") and hasattr(value, "numpy"):
        value = value.numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=np.float32))


def _arch_arg(arch: Union[str, Mapping[str, Any], os.PathLike, None]) -> Optional[str]:
    """A preset name or spec JSON path; a dict is written to a temporary spec file."""
    if arch is None or isinstance(arch, str):
        return arch
    if isinstance(arch, os.PathLike):
        return os.fspath(arch)
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    with handle:
        json.dump(dict(arch), handle)
    return handle.name


class Model:
    """A CNN: an architecture and its parameters (float32)."""

    def __init__(self, native: "_native.NativeModel") -> None:
        self._native = native

    @staticmethod
    def load(path: Union[str, os.PathLike], arch: Union[str, Mapping[str, Any], None] = None) -> "Model":
        """Loads a safetensors model file.

        Args:
            path: the model file.
            arch: when the file carries no architecture: a preset name (``cnn-digits``), a
                spec dict, or a spec JSON file.

        Raises:
            InputError: missing or malformed file, unknown arch, tensors that do not fit it.
        """
        return Model(_native.NativeModel.load(os.fspath(path), _arch_arg(arch)))

    @staticmethod
    def from_state_dict(state_dict: Mapping[str, Any], arch: Union[str, Mapping[str, Any], os.PathLike]) -> "Model":
        """A model from named arrays (numpy, torch tensors, anything with ``__array__``).

        Args:
            state_dict: parameter name -> array, names and shapes as the arch defines them.
            arch: a preset name, a spec dict, or a spec JSON file.

        Raises:
            InputError: unknown arch, a missing or extra tensor, a shape that does not fit.
        """
        tensors = []
        for name, value in state_dict.items():
            array = _as_numpy(value)
            tensors.append((str(name), list(array.shape), array.astype("<f4").tobytes()))
        arch_arg = _arch_arg(arch)
        assert arch_arg is not None
        return Model(_native.NativeModel.from_tensors(tensors, arch_arg))

    @property
    def arch(self) -> str:
        """The architecture's name."""
        return self._native.arch

    @property
    def spec(self) -> Dict[str, Any]:
        """The architecture spec, as a dict (what a spec JSON file holds)."""
        return json.loads(self._native.spec_json())

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Every parameter as a float32 numpy array."""
        return {
            name: np.frombuffer(data, dtype="<f4").reshape(shape).copy()
            for name, shape, _prunable, data in self._native.tensors()
        }

    def prunable(self) -> List[str]:
        """The names of the prunable parameters, in model order."""
        return [name for name, _shape, prunable, _data in self._native.tensors() if prunable]

    def __repr__(self) -> str:
        return f"Model(arch={self.arch!r})"


class PruneResult:
    """What ``prune`` gave.

    Attributes:
        masks: prunable parameter name -> uint8 keep mask (1 = kept), shaped like the weights.
        weights: name -> float32 weights after pruning, for pruners that move the weights
            they keep (OBS, WoodFisher, CHITA); None otherwise.
        sparsity: pruned weights over all prunable weights.
        seconds: how long the pruner took.
        host_seconds: how long the whole call took inside the host (checks, plugin, masks
            applied): the command line's in-process time for the same prune.
        pruner: the pruner's name; ``version`` its version.
        model: the pruned model (masks and new weights applied).
    """

    def __init__(self, raw: Dict[str, Any]) -> None:
        self.masks: Dict[str, np.ndarray] = {}
        weights: Dict[str, np.ndarray] = {}
        for name, shape, keep, new in raw["layers"]:
            self.masks[name] = np.frombuffer(keep, dtype=np.uint8).reshape(shape).copy()
            if new is not None:
                weights[name] = np.frombuffer(new, dtype="<f4").reshape(shape).copy()
        self.weights: Optional[Dict[str, np.ndarray]] = weights or None
        self.sparsity: float = raw["sparsity"]
        self.seconds: float = raw["seconds"]
        self.host_seconds: float = raw["host_seconds"]
        self.pruner: str = raw["pruner"]
        self.version: str = raw["version"]
        self.model: Model = Model(raw["model"])

    def apply(self, state_dict: Mapping[str, Any]) -> Dict[str, Any]:
        """The state dict with pruned weights zeroed and new weights applied.

        Arrays come back as the caller's type: numpy in, numpy out; torch tensors in, torch
        tensors out (same dtype and device). Entries that are not prunable pass through.
        """
        out: Dict[str, Any] = {}
        for name, value in state_dict.items():
            if name not in self.masks:
                out[name] = value
                continue
            base = self.weights[name] if self.weights and name in self.weights else _as_numpy(value)
            pruned = np.where(self.masks[name].reshape(base.shape) != 0, base, np.float32(0)).astype(np.float32)
            if hasattr(value, "detach") and hasattr(value, "new_tensor"):
                out[name] = value.new_tensor(pruned).to(dtype=value.dtype, device=value.device)
            elif isinstance(value, np.ndarray):
                out[name] = pruned.astype(value.dtype, copy=False)
            else:
                out[name] = pruned
        return out

    def __repr__(self) -> str:
        return f"PruneResult(pruner={self.pruner!r}, sparsity={self.sparsity:.4f}, seconds={self.seconds:.3f})"


Dataset = Union[str, Tuple[Any, Any], None]
"""A dataset name (``"digits"``, ``"fashion-mnist"``, ...) or ``(images, labels)`` arrays:
images shaped ``(n, channels, height, width)`` (or ``(n, height, width)`` for one channel),
normalised as the model was trained; labels ``n`` integers in ``0..classes``."""


def _dataset_args(dataset: Dataset) -> Tuple[Optional[str], Optional[Tuple[bytes, List[int], List[int]]]]:
    """``(name, None)`` or ``(None, arrays)`` for the native calls."""
    if dataset is None or isinstance(dataset, str):
        return dataset, None
    if isinstance(dataset, os.PathLike):
        raise InputError("dataset: give a dataset name or (images, labels) arrays, not a path (use data_dir=)")
    try:
        images, labels = dataset
    except (TypeError, ValueError):
        raise InputError("dataset: give a dataset name or a pair (images, labels)") from None
    x = _as_numpy(images)
    if x.ndim == 3:
        x = x[:, None, :, :]
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise InputError(f"dataset labels: expected a 1-d array of integer class indices, got shape {y.shape} {y.dtype}")
    if y.size and y.min() < 0:
        raise InputError(f"dataset labels: label {int(y.min())} is negative")
    return None, (np.ascontiguousarray(x, dtype="<f4").tobytes(), list(x.shape), [int(v) for v in y])


class DatasetArrays:
    """A dataset's images and labels as numpy arrays, normalised as hyperprune trains on them.

    Attributes:
        name: the dataset's name; ``classes`` its class count; ``normalisation`` how raw
            pixels became these floats (e.g. ``"x / 255"``).
        train: ``(images, labels)``: float32 ``(n, channels, height, width)`` and int64 ``(n,)``.
            Calibration by name (``dataset="digits"``) draws from it less the val slice.
        test: ``(images, labels)``, the split every reported accuracy comes from.
    """

    def __init__(self, raw: Tuple[Any, ...]) -> None:
        name, classes, normalisation, train, test = raw
        self.name: str = name
        self.classes: int = classes
        self.normalisation: str = normalisation
        self.train: Tuple[np.ndarray, np.ndarray] = self._split(train)
        self.test: Tuple[np.ndarray, np.ndarray] = self._split(test)

    @staticmethod
    def _split(raw: Tuple[bytes, List[int], List[int]]) -> Tuple[np.ndarray, np.ndarray]:
        data, shape, labels = raw
        return np.frombuffer(data, dtype="<f4").reshape(shape).copy(), np.asarray(labels, dtype=np.int64)

    def __repr__(self) -> str:
        return f"DatasetArrays(name={self.name!r}, train={len(self.train[1])}, test={len(self.test[1])})"


def load_dataset(name: str, data_dir: Optional[Union[str, os.PathLike]] = None) -> DatasetArrays:
    """A registered dataset (``"digits"``, ``"mnist"``, ``"fashion-mnist"``, ...) as arrays,
    e.g. to evaluate a PyTorch model on exactly the images hyperprune evaluates on.

    Raises:
        InputError: unknown dataset, or its files are missing (the message says where they
            were looked for).
    """
    return DatasetArrays(_native.dataset_arrays(name, None if data_dir is None else os.fspath(data_dir)))


def prune(
    model: Model,
    pruner: str = "magnitude",
    sparsity: float = 0.9,
    *,
    scope: str = "global",
    pattern: Optional[str] = None,
    dataset: Dataset = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    calib_samples: int = 1024,
    options: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
    state: Optional[Union[str, os.PathLike]] = None,
    bn_correct: bool = False,
    bn_recalibrate: Optional[int] = None,
    isolate: bool = False,
    timeout: float = 600.0,
    worker_memory: Optional[int] = None,
) -> PruneResult:
    """Prunes ``model`` as ``hyperprune prune`` does (the GIL is released; Ctrl-C stops it).

    Args:
        model: the model.
        pruner: a plugin name (see ``plugins()``).
        sparsity: fraction of prunable weights to remove, in [0, 1).
        scope: ``"global"`` (rank all layers together) or ``"layer"`` (same sparsity each).
        pattern: None (unstructured) or ``"N:M"`` (keep N of every M weights, e.g. ``"2:4"``).
        dataset: calibration data for data-aware pruners: a dataset name (its train split,
            less the val slice) or ``(images, labels)`` arrays.
        data_dir: folder with the dataset's files, if not in the default place.
        calib_samples: calibration samples for pruners that ask for the default.
        options: pruner options (``--opt name=value``), e.g. ``{"steps": 200}``.
        seed: seed for every random choice.
        state: a learnable pruner's fitted state file (``fit``'s ``out``); the same as
            ``options={"state": ...}``.
        bn_correct: afterwards, correct batch normalisation statistics from the pruned
            weights (data-free).
        bn_recalibrate: afterwards, re-estimate batch normalisation statistics from this many
            training images of ``dataset``.
        isolate: run the plugin in a supervised ``hyperprune`` worker process (as
            ``--isolate worker``): a plugin that crashes raises ``PluginError`` instead of
            ending Python. Needs the ``hyperprune`` executable and a dataset name.
        timeout: seconds an isolated call may take.
        worker_memory: memory limit of the worker, MiB (default: half the machine's).

    Raises:
        InputError: unknown pruner, bad option or sparsity, missing dataset or state.
        PluginError: the plugin failed.
        KeyboardInterrupt: Ctrl-C (the plugin was asked to stop, and stopped).
    """
    if not isinstance(model, Model):
        raise InputError("model: expected a hyperprune.Model (Model.load or Model.from_state_dict)")
    merged = dict(options or {})
    if state is not None:
        merged["state"] = state
    opts = [f"{k}={_option_text(v)}" for k, v in merged.items()]
    name, arrays = _dataset_args(dataset)
    raw = _native.prune(
        model._native,
        pruner,
        float(sparsity),
        scope,
        pattern or "unstructured",
        opts,
        int(seed),
        name,
        None if data_dir is None else os.fspath(data_dir),
        int(calib_samples),
        arrays,
        bool(bn_correct),
        None if bn_recalibrate is None else int(bn_recalibrate),
        _isolation(isolate, timeout, worker_memory),
    )
    return PruneResult(raw)


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def evaluate(
    model: Model,
    masks: Union[PruneResult, Mapping[str, Any], None] = None,
    dataset: Dataset = "digits",
    *,
    data_dir: Optional[Union[str, os.PathLike]] = None,
) -> Dict[str, float]:
    """Test accuracy and loss of ``model`` (the GIL is released).

    Args:
        model: the dense model.
        masks: None (the model as is), a ``PruneResult`` (its masks and new weights, i.e.
            ``result.model``), or a dict name -> keep mask (nonzero = kept).
        dataset: a dataset name (its test split) or ``(images, labels)`` arrays.
        data_dir: folder with the dataset's files, if not in the default place.

    Returns:
        ``{"accuracy": float in [0, 1], "loss": float, "samples": int}``.

    Raises:
        InputError: unknown dataset, missing files, masks or model that do not fit.
    """
    native = model._native
    if isinstance(masks, PruneResult):
        native = masks.model._native
    elif masks is not None:
        native = native.masked(
            [(name, np.ascontiguousarray(_as_numpy(m) != 0, dtype=np.uint8).tobytes()) for name, m in masks.items()]
        )
    name, arrays = _dataset_args(dataset)
    accuracy, loss, samples = _native.evaluate(native, name, None if data_dir is None else os.fspath(data_dir), arrays)
    return {"accuracy": accuracy, "loss": loss, "samples": samples}


def _flag_list(values: Iterable[Any]) -> str:
    return ",".join(_option_text(v) for v in values)


def fit(
    pruner: str,
    zoo: Union[str, os.PathLike, "Zoo"],
    out: Union[str, os.PathLike],
    options: Optional[Mapping[str, Any]] = None,
    *,
    seed: Optional[int] = None,
    calib_samples: Optional[int] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    train_members: Optional[int] = None,
    progress: bool = False,
) -> Path:
    """Fits a learnable pruner (the hypernetwork) on a zoo, as ``hyperprune fit`` does.

    It fits on the zoo's train members and chooses settings on its val members; test members
    are never read. The state goes to ``out``, its learning curve and checkpoint beside it; a
    fit interrupted (Ctrl-C) resumes from the checkpoint when called again.

    Args:
        pruner: the learnable pruner's name (``"hypernet"``).
        zoo: the zoo folder (or a ``Zoo``).
        out: the state file to write.
        options: the pruner's fit options (``hyperprune plugins info NAME``).
        seed: seed of the fit.
        calib_samples: calibration samples for data services asked for the default.
        data_dir: folder with the zoo dataset's files, if not in the default place.
        train_members: fit on the first K train members only.
        progress: draw a tqdm bar (when tqdm is installed).

    Returns:
        The state file's path, for ``prune(..., state=...)``.

    Raises:
        InputError: unknown pruner, a pruner that is not learnable, a bad option or zoo.
        PluginError: the fit failed.
        KeyboardInterrupt: Ctrl-C (the checkpoint stays for resuming).
    """
    args = ["fit", "--pruner", pruner, "--zoo", os.fspath(zoo.path if isinstance(zoo, Zoo) else zoo)]
    args += ["--out", os.fspath(out)]
    for k, v in (options or {}).items():
        args += ["--opt", f"{k}={_option_text(v)}"]
    if seed is not None:
        args += ["--seed", str(int(seed))]
    if calib_samples is not None:
        args += ["--calib-samples", str(int(calib_samples))]
    if data_dir is not None:
        args += ["--data-dir", os.fspath(data_dir)]
    if train_members is not None:
        args += ["--train-members", str(int(train_members))]
    with _Progress(progress, f"fit {pruner}"):
        _native.run_command(args)
    return Path(out)


def bench(
    zoo: Union[str, os.PathLike, "Zoo"],
    pruners: Union[str, Sequence[str]],
    compression: Optional[Sequence[float]] = (2, 4, 8, 16, 32),
    out: Union[str, os.PathLike, None] = None,
    *,
    sparsity: Optional[Sequence[float]] = None,
    split: str = "test",
    options: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
    scope: str = "global",
    calib_samples: int = 1024,
    members: Optional[int] = None,
    bn_correct: bool = False,
    bn_recalibrate: Optional[int] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    isolate: bool = False,
    timeout: float = 600.0,
    progress: bool = False,
) -> Any:
    """Benchmarks pruners head to head on a zoo's members, as ``hyperprune bench`` does.

    Learnable pruners without a ``state`` option are fitted first on the zoo's train (and
    val) members. Rows are appended to ``out/results.jsonl`` one by one; a bench interrupted
    (Ctrl-C) or repeated into the same ``out`` resumes, skipping rows already there.

    Args:
        zoo: the zoo folder (or a ``Zoo``).
        pruners: names (a list, or one comma-separated string; ``"all"`` for every plugin).
        compression: compression ratios (prunable weights / remaining ones).
        out: the run folder (results.jsonl, run.json); required.
        sparsity: sparsities instead of compression ratios.
        split: the members pruned: ``"test"`` (default), ``"val"``, ``"train"`` or ``"all"``.
        options: pruner options as ``{"pruner.name": value}`` or ``{"pruner": {"name": value}}``.
        seed: seed of every pruning request.
        scope: ``"global"`` or ``"layer"``.
        calib_samples: calibration samples for data-aware pruners that ask for the default.
        members: use only the first K members of the split.
        bn_correct, bn_recalibrate: batch normalisation statistics after masking, as for
            ``prune``.
        data_dir: folder with the zoo dataset's files, if not in the default place.
        isolate: every call in a supervised ``hyperprune`` worker process (a crash is an
            error row); needs the ``hyperprune`` executable.
        timeout: seconds an isolated call may take.
        progress: draw a tqdm bar (when tqdm is installed).

    Returns:
        Every row of ``out/results.jsonl`` as a list of dicts, or a pandas DataFrame when
        pandas is installed.

    Raises:
        InputError: unknown pruner, bad zoo, options or ratios.
        KeyboardInterrupt: Ctrl-C (rows written so far stay).
    """
    if out is None:
        raise InputError("bench: out= is required (the run folder results.jsonl goes to)")
    names = pruners if isinstance(pruners, str) else ",".join(pruners)
    args = ["bench", "--zoo", os.fspath(zoo.path if isinstance(zoo, Zoo) else zoo), "--pruners", names]
    args += ["--out", os.fspath(out), "--split", split, "--seed", str(int(seed)), "--scope", scope]
    args += ["--calib-samples", str(int(calib_samples))]
    if sparsity is not None:
        args += ["--sparsity", _flag_list(sparsity)]
    elif compression is not None:
        args += ["--compression", _flag_list(compression)]
    for k, v in (options or {}).items():
        if isinstance(v, Mapping):
            for name, value in v.items():
                args += ["--opt", f"{k}.{name}={_option_text(value)}"]
        else:
            args += ["--opt", f"{k}={_option_text(v)}"]
    if members is not None:
        args += ["--members", str(int(members))]
    if bn_correct:
        args.append("--bn-correct")
    if bn_recalibrate is not None:
        args += ["--bn-recalibrate", str(int(bn_recalibrate))]
    if data_dir is not None:
        args += ["--data-dir", os.fspath(data_dir)]
    if _isolation(isolate, timeout, None) is None:
        args += ["--isolate", "none"]
    else:
        args += ["--isolate", "worker", "--timeout", str(float(timeout))]
    with _Progress(progress, "bench"):
        _native.run_command(args)
    rows = [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines() if line.strip()]
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


def train_zoo(
    out: Union[str, os.PathLike],
    arch: Union[str, Mapping[str, Any], os.PathLike],
    dataset: str = "digits",
    members: int = 8,
    epochs: int = 3,
    *,
    split: Optional[Sequence[float]] = None,
    seed: int = 0,
    vary: Optional[Sequence[str]] = None,
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    progress: bool = False,
) -> "Zoo":
    """Trains (or resumes) a model zoo, as ``hyperprune zoo train`` does.

    Args:
        out: the zoo folder.
        arch: a preset name (``"cnn-s"``, ``"resnet-s"``), a spec dict or a spec JSON file.
        dataset: the dataset the members learn.
        members: how many members.
        epochs: training epochs of each member.
        split: fractions of members for train, val and test (default the command's).
        seed: the zoo's seed (every member's seed derives from it).
        vary: hyperparameters varied across members (``["seed", "lr"]``; default the
            command's).
        batch_size, lr: training settings (default the command's).
        data_dir: folder with the dataset's files, if not in the default place.
        progress: draw a tqdm bar (when tqdm is installed).

    Returns:
        The trained ``Zoo``.

    Raises:
        InputError: unknown arch or dataset, bad settings, an ``out`` holding another zoo.
        KeyboardInterrupt: Ctrl-C (members trained so far stay; call again to resume).
    """
    arch_arg = _arch_arg(arch)
    assert arch_arg is not None
    args = ["zoo", "train", "--arch", arch_arg, "--dataset", dataset, "--members", str(int(members))]
    args += ["--epochs", str(int(epochs)), "--seed", str(int(seed)), "--out", os.fspath(out)]
    if split is not None:
        args += ["--split", _flag_list(split)]
    if vary is not None:
        args += ["--vary", ",".join(vary)]
    if batch_size is not None:
        args += ["--batch-size", str(int(batch_size))]
    if lr is not None:
        args += ["--lr", str(float(lr))]
    if data_dir is not None:
        args += ["--data-dir", os.fspath(data_dir)]
    with _Progress(progress, "zoo train"):
        _native.run_command(args)
    return Zoo.load(out)


class Zoo:
    """A model zoo: trained members of one architecture on one dataset, split into train,
    val and test members (``zoo.json`` in its folder).

    Attributes:
        path: the zoo folder.
        name, arch, dataset: the zoo's name, architecture name and dataset.
        members: one dict per member (``id``, ``file``, ``split``, ``test_accuracy``, the
            hyperparameters, ...), as ``zoo.json`` lists them.
    """

    def __init__(self, path: Path, meta: Dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.name: str = meta["name"]
        self.arch: str = meta["arch"]["name"]
        self.dataset: str = meta["dataset"]
        self.members: List[Dict[str, Any]] = list(meta["members"])

    @staticmethod
    def load(path: Union[str, os.PathLike]) -> "Zoo":
        """Opens the zoo in folder ``path`` (checked as every command checks it).

        Raises:
            InputError: no readable ``zoo.json`` there, or one that is malformed.
        """
        return Zoo(Path(path), json.loads(_native.zoo_meta(os.fspath(path))))

    def split(self, which: str = "test") -> List[Dict[str, Any]]:
        """The members of one split (``"train"``, ``"val"``, ``"test"``; ``"all"`` for every one)."""
        if which not in ("train", "val", "test", "all"):
            raise InputError(f"split must be 'train', 'val', 'test' or 'all', got {which!r}")
        return [m for m in self.members if which == "all" or str(m["split"]).lower() == which]

    def model(self, member: Union[int, str, Mapping[str, Any]]) -> Model:
        """One member's model: by position in ``members``, by id, or a member dict."""
        if isinstance(member, int):
            info = self.members[member]
        elif isinstance(member, str):
            found = [m for m in self.members if m["id"] == member]
            if not found:
                raise InputError(f"{self.path}: no member with id {member!r}")
            info = found[0]
        else:
            info = dict(member)
        return Model.load(self.path / info["file"])

    def models(self, split: str = "test") -> List[Model]:
        """The models of one split, in ``zoo.json`` order."""
        return [self.model(m) for m in self.split(split)]

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Zoo(path={str(self.path)!r}, arch={self.arch!r}, dataset={self.dataset!r}, members={len(self)})"
