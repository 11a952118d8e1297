# syntax=docker/dockerfile:1
#
# G2P Bridge image: both console scripts (`g2p-bridge`, `example-bank`) in one image.
# Pick the component with the command:
#   docker run IMAGE                                   # g2p-bridge api on :8000 (default)
#   docker run IMAGE g2p-bridge worker --queues dispatch --concurrency 2
#   docker run IMAGE g2p-bridge beat
#   docker run IMAGE g2p-bridge migrate
#   docker run IMAGE example-bank api --host 0.0.0.0 --port 8003
# Configuration comes from G2P_BRIDGE_* / EXAMPLE_BANK_* environment variables only.

ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for dependencies without a wheel for the target platform; this
# stage is thrown away, so none of it reaches the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Every dependency comes from the hash-pinned lock (requirements/, written by `make lock`):
# the build resolves nothing, so an image built next year has the same packages as today's,
# and a file whose hash differs from the lock's stops the build. The lock layer comes first
# so a change to src/ alone reuses it.
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN pip install --require-hashes -r requirements/build.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements/build.txt -r requirements/runtime.txt

# The project's own wheel, built by the locked setuptools (no build isolation, so nothing is
# fetched) and installed without dependencies and without an index: they are all in the venv.
# pip's precompiled .pyc files stay: the runtime filesystem is read-only.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-index --no-deps /wheels/g2p_bridge-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y pip setuptools

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="g2p-bridge" \
      org.opencontainers.image.description="G2P Bridge: government-to-person payments through a sponsor bank" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MPL-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

# Fixed UID/GID 10001: Kubernetes' runAsNonRoot can verify a numeric user.
RUN groupadd --system --gid 10001 g2p \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin g2p

# Owned by root and read-only for the runtime user: the code cannot be modified.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000 8003

# No HEALTHCHECK: the same image runs HTTP APIs and queue workers; Kubernetes probes
# /health/live and /health/ready on the API containers (see deploy/helm).
CMD ["g2p-bridge", "api", "--host", "0.0.0.0", "--port", "8000"]
