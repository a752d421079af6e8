"""Type stub of ``hyperprune._native``, the Rust extension; use the ``hyperprune`` package."""

from typing import Any, Dict, List, Optional, Tuple

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
) -> Dict[str, Any]:
    """Prunes ``model``; a dict with ``layers``, ``model``, ``sparsity``, ``seconds``, ``pruner``, ``version``."""

def evaluate(model: NativeModel, dataset: str, data_dir: Optional[str] = None) -> Tuple[float, float, int]:
    """Test-split accuracy, loss and sample count of ``model`` on ``dataset``."""
