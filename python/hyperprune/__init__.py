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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

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
]


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


def prune(
    model: Model,
    pruner: str = "magnitude",
    sparsity: float = 0.9,
    *,
    scope: str = "global",
    pattern: Optional[str] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[Union[str, os.PathLike]] = None,
    calib_samples: int = 1024,
    options: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
) -> PruneResult:
    """Prunes ``model`` as ``hyperprune prune --isolate none`` does (the GIL is released).

    Args:
        model: the model.
        pruner: a plugin name (see ``plugins()``).
        sparsity: fraction of prunable weights to remove, in [0, 1).
        scope: ``"global"`` (rank all layers together) or ``"layer"`` (same sparsity each).
        pattern: None (unstructured) or ``"N:M"`` (keep N of every M weights, e.g. ``"2:4"``).
        dataset: calibration data for data-aware pruners (``"digits"``, ``"mnist"``, ...).
        data_dir: folder with the dataset's files, if not in the default place.
        calib_samples: calibration samples for pruners that ask for the default.
        options: pruner options (``--opt name=value``), e.g. ``{"state": "hypernet.state"}``.
        seed: seed for every random choice.

    Raises:
        InputError: unknown pruner, bad option or sparsity, missing dataset or state.
        PluginError: the plugin failed.
    """
    if not isinstance(model, Model):
        raise InputError("model: expected a hyperprune.Model (Model.load or Model.from_state_dict)")
    opts = [f"{k}={_option_text(v)}" for k, v in (options or {}).items()]
    raw = _native.prune(
        model._native,
        pruner,
        float(sparsity),
        scope,
        pattern or "unstructured",
        opts,
        int(seed),
        dataset,
        None if data_dir is None else os.fspath(data_dir),
        int(calib_samples),
    )
    return PruneResult(raw)


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def evaluate(
    model: Model,
    masks: Union[PruneResult, Mapping[str, Any], None] = None,
    dataset: str = "digits",
    *,
    data_dir: Optional[Union[str, os.PathLike]] = None,
) -> Dict[str, float]:
    """Test-split accuracy and loss of ``model`` (the GIL is released).

    Args:
        model: the dense model.
        masks: None (the model as is), a ``PruneResult`` (its masks and new weights, i.e.
            ``result.model``), or a dict name -> keep mask (nonzero = kept).
        dataset: the dataset whose test split is used.
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
    accuracy, loss, samples = _native.evaluate(native, dataset, None if data_dir is None else os.fspath(data_dir))
    return {"accuracy": accuracy, "loss": loss, "samples": samples}
