"""seqserve: recurrent sequence models served with onnxruntime.

``__version__`` is the one place the version is written: pyproject.toml reads it from here, so
a server run from a copied source tree (the Docker image) reports the same version as an
installed package.
"""

__version__ = "0.1.0"
