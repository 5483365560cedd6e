# seqserve: onnxruntime serving image (no torch, no compilers in the final stage).
#
#   docker build -t seqserve .                       # CPU (default target "cpu")
#   docker build --target gpu -t seqserve:gpu .      # NVIDIA CUDA + onnxruntime-gpu
#
# Both targets run the same command; the GPU one selects CUDAExecutionProvider through
# SEQSERVE_PROVIDERS, and the service falls back to CPU (one log line per model) when no GPU is
# visible. See docs/deployment.md.

# Pinned by tag. CUDA's major version must match the onnxruntime-gpu wheel's (1.31 wants CUDA 13
# and cuDNN 9); the GPU stages use the base image's own Python (3.12 on Ubuntu 24.04).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU: dependencies in a venv
FROM ${PYTHON_IMAGE} AS builder
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Only the dependency manifests: this layer is rebuilt when they change, not when the code does.
# The package itself is installed from stub folders (app/__init__.py holds only a version,
# which pyproject reads) and removed again, leaving its
# dependencies, pinned by constraints-serve.txt (the README is a stub too: pyproject names it).
COPY pyproject.toml constraints-serve.txt ./
RUN mkdir -p app training \
    && touch README.md training/__init__.py && echo '__version__ = "0"' > app/__init__.py \
    && pip install -c constraints-serve.txt '.[serve]' \
    && pip uninstall -y seqserve

# ---------------------------------------------------------------- GPU: base with a system Python
FROM ${CUDA_IMAGE} AS gpu-base
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---------------------------------------------------------------- GPU: dependencies in a venv
FROM gpu-base AS gpu-builder
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY pyproject.toml constraints-serve.txt ./
# Same pins, then onnxruntime swapped for onnxruntime-gpu at its own pin in constraints-serve.txt
# (both provide the `onnxruntime` module, so only one may be installed; PyPI's newest
# onnxruntime-gpu can trail the CPU package by a release).
RUN mkdir -p app training \
    && touch README.md training/__init__.py && echo '__version__ = "0"' > app/__init__.py \
    && pip install -c constraints-serve.txt '.[serve]' \
    && pip uninstall -y seqserve onnxruntime \
    && pip install -c constraints-serve.txt \
        "onnxruntime-gpu==$(sed -n 's/^onnxruntime-gpu==//p' constraints-serve.txt)"

# ---------------------------------------------------------------- GPU: runtime
FROM gpu-base AS gpu
COPY --from=gpu-builder /opt/venv /opt/venv
WORKDIR /srv
COPY app ./app
COPY contract ./contract
COPY models ./models
RUN python3 -m compileall -q app contract \
    && useradd --system --uid 10001 --no-create-home seqserve
USER 10001
ENV PATH=/opt/venv/bin:$PATH \
    SEQSERVE_MODELS_DIR=/srv/models \
    SEQSERVE_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]' \
    SEQSERVE_INTRA_OP_THREADS=1 \
    WEB_CONCURRENCY=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["python", "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- CPU: runtime (default target)
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv
COPY app ./app
COPY contract ./contract
COPY models ./models
# Byte-code compiled now: the container's root filesystem may be read-only.
RUN python -m compileall -q app contract \
    && useradd --system --uid 10001 --no-create-home seqserve
USER 10001

ENV PATH=/opt/venv/bin:$PATH \
    SEQSERVE_MODELS_DIR=/srv/models \
    SEQSERVE_INTRA_OP_THREADS=1 \
    WEB_CONCURRENCY=2
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]

# One process per core (WEB_CONCURRENCY), one onnxruntime thread each; the CLI gives the
# workers a shared Prometheus directory under /tmp (writable: a tmpfs or emptyDir when the root
# filesystem is read-only) so that /metrics sums them.
CMD ["python", "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", "8000"]
