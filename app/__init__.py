"""seqserve: recurrent sequence models served with onnxruntime."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("seqserve")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"
