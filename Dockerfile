# fedchain: one image for every role (data split, deploy, peer); the entry point is the CLI.
#
#   docker build -t fedchain:0.1.0 .
#   docker run --rm fedchain:0.1.0 --help
#
# The chain (anvil) and the IPFS node (Kubo) run from their own images; see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only torch first, from PyTorch's CPU index, so that the lock file's `torch==` pin is already
# satisfied (2.13.0+cpu matches it) and pip never pulls the CUDA build and its nvidia-* wheels.
# Keep TORCH_VERSION equal to the torch pin in requirements.lock (tests/test_deployment_files.py checks).
ARG TORCH_VERSION=2.13.0
WORKDIR /src
COPY requirements.lock ./
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
 && pip install -r requirements.lock

# The package itself, without dependencies: requirements.lock already fixed all of them.
# (README.md* matches nothing until the project has a README; pyproject.toml names it.)
COPY pyproject.toml README.md* ./
COPY node ./node
COPY cli ./cli
COPY contracts ./contracts
RUN pip install --no-deps . \
 && cd / && rm -rf /src \
 && fedchain --version

# Unprivileged user (uid/gid 10001, as deploy/k8s runs it). /data (a member's private data) and
# /deployment exist, owned by it, so that named volumes mounted there (docker-compose.yml) start
# out writable by it; Kubernetes gets the same through fsGroup.
RUN useradd --create-home --uid 10001 --user-group fedchain \
 && mkdir -p /data /deployment \
 && chown fedchain:fedchain /data /deployment
USER fedchain
WORKDIR /home/fedchain

ENTRYPOINT ["fedchain"]
CMD ["--help"]
