"""Type stub of ``hyperprune._native``, the Rust extension; use the ``hyperprune`` package."""

from typing import Any, Callable, Dict, List, Optional, Tuple

class HyperpruneError(Exception):
    """Base class of every hyperprune error."""

class InputError(HyperpruneError):
    """Bad input: the host's one-line message says what and how to fix it."""

class PluginError(HyperpruneError):
    """A pruner plugin failed, or could not be loaded."""

class NativeModel:
    """A model: an architecture and its parameter values."""

    @staticmethod
    def load(path: str, arch: Optional[str] = None) -> "NativeModel":
        """Loads a safetensors model, with an optional arch (preset name or spec JSON file)."""
    @staticmethod
    def from_tensors(tensors: List[Tuple[str, List[int], bytes]], arch: str) -> "NativeModel":
        """A model from ``(name, shape, little-endian f32 bytes)`` tensors and an arch."""
    @property
    def arch(self) -> str:
        """The architecture's name."""
    def spec_json(self) -> str:
        """The architecture spec as JSON."""
    def tensors(self) -> List[Tuple[str, List[int], bool, bytes]]:
        """Every parameter as ``(name, shape, prunable, little-endian f32 bytes)``."""
    def masked(self, masks: List[Tuple[str, bytes]]) -> "NativeModel":
        """A copy with keep masks ``(name, u8 bytes)`` applied to its prunable layers."""

def set_plugin_dirs(dirs: List[str]) -> List[str]:
    """Sets the folders searched for in-tree plugin files; returns the names found."""

def plugins() -> List[Tuple[str, str]]:
    """Every plugin found, as ``(info JSON, file path)`` pairs."""

def load_plugin(path: str) -> str:
    """Loads a third-party plugin file; returns its name."""

def unknown_plugin(name: str) -> str:
    """Why no plugin is called ``name``: the installed names, and files that failed to load."""

Arrays = Tuple[bytes, List[int], List[int]]
"""``(little-endian f32 image bytes, [n, c, h, w], labels)``."""

def prune(
    model: NativeModel,
    pruner: str,
    sparsity: float,
    scope: str,
    pattern: str,
    options: List[str],
    seed: int,
    dataset: Optional[str],
    data_dir: Optional[str],
    calib_samples: int,
    arrays: Optional[Arrays] = None,
    bn_correct: bool = False,
    bn_recalibrate: Optional[int] = None,
    isolate: Optional[Tuple[float, Optional[int]]] = None,
) -> Dict[str, Any]:
    """Prunes ``model``; a dict with ``layers``, ``model``, ``sparsity``, ``seconds``,
    ``host_seconds``, ``pruner``, ``version``."""

def evaluate(
    model: NativeModel, dataset: Optional[str], data_dir: Optional[str] = None, arrays: Optional[Arrays] = None
) -> Tuple[float, float, int]:
    """Accuracy, loss and sample count of ``model`` on ``dataset``'s test split or on ``arrays``."""

def run_command(args: List[str]) -> None:
    """Runs a ``hyperprune`` command line (without the program name) in this process."""

def dataset_arrays(
    name: str, data_dir: Optional[str] = None
) -> Tuple[str, int, str, Tuple[bytes, List[int], List[int]], Tuple[bytes, List[int], List[int]]]:
    """A dataset's ``(name, classes, normalisation, train, test)``, splits as ``(bytes, shape, labels)``."""

def zoo_meta(path: str) -> str:
    """A zoo's ``zoo.json``, checked, as JSON."""

def set_worker_executable(path: str) -> None:
    """Names the ``hyperprune`` executable that serves isolated calls."""

def set_log_sink(sink: Optional[Callable[[List[Tuple[int, str, str, int, int, str]]], None]]) -> None:
    """Sets the callable that receives the host's log and progress events."""
