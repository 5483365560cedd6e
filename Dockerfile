# seqserve: onnxruntime serving image (no torch). Build: docker build -t seqserve .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv

# Dependencies first, so this layer is cached until pyproject.toml changes.
COPY pyproject.toml README.md constraints-serve.txt ./
RUN mkdir -p app training \
    && touch app/__init__.py training/__init__.py \
    && pip install -c constraints-serve.txt '.[serve]' \
    && pip uninstall -y seqserve \
    && rm -rf app training

COPY app ./app
COPY models ./models

RUN useradd --system --uid 10001 --no-create-home seqserve
USER 10001

ENV SEQSERVE_MODELS_DIR=/srv/models \
    SEQSERVE_INTRA_OP_THREADS=1 \
    WEB_CONCURRENCY=2
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]

# One process per core (WEB_CONCURRENCY), one onnxruntime thread each; the CLI gives the
# workers a shared Prometheus directory under /tmp so /metrics sums them.
CMD ["python", "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", "8000"]
