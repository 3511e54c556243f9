"""vtp_bench: video-text pre-training methods on one shared ground (encoders, data, metrics, training).

Python API: ``vtp_bench.load(path)`` -> a model with ``encode_video`` / ``encode_text`` / ``similarity``
(``vtp_bench.api``); the command line is ``vtp-bench`` (or ``python -m vtp_bench``).
"""

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = _metadata.version("vtp_bench")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from vtp_bench.api import Model

__all__ = ["Model", "__version__", "load"]


def load(path: Any, *, method: str | None = None, experiment: str | None = None, device: str = "cpu",
         **kwargs: Any) -> "Model":
    """See ``vtp_bench.api.load`` (imported on first use: ``import vtp_bench`` stays cheap)."""
    from vtp_bench.api import load as _load

    return _load(path, method=method, experiment=experiment, device=device, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Model":
        from vtp_bench.api import Model

        return Model
    raise AttributeError(f"module 'vtp_bench' has no attribute {name!r}")
