# The transformers runtime image: kairyu_runtime at KAITO's /workspace/tfs/inference_api.py.
# Build from the repository root:  docker build -f images/runtime/transformers.Dockerfile .
# PyPI's torch wheels carry their CUDA libraries, so a slim Python base runs on GPU nodes (the
# driver comes from the node through the NVIDIA container toolkit).
ARG PYTHON=3.11
ARG UV=0.13.9

FROM ghcr.io/astral-sh/uv:${UV} AS uv

FROM python:${PYTHON}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/runtime UV_PYTHON_DOWNLOADS=never
WORKDIR /src
# Dependencies first: they change far less often than our code, so this layer stays cached.
COPY images/pyproject.toml images/uv.lock ./
COPY images/runtime/pyproject.toml runtime/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package kairyu-runtime --no-install-workspace
COPY images/runtime runtime
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package kairyu-runtime --no-editable

FROM python:${PYTHON}-slim-bookworm
RUN useradd --uid 1000 --create-home kairyu \
    && mkdir -p /workspace/tfs /workspace/weights /mnt/adapter \
    && chown -R 1000:1000 /workspace/weights /mnt/adapter
COPY --from=build /opt/runtime /opt/runtime
COPY images/runtime/entrypoints/tfs_inference_api.py /workspace/tfs/inference_api.py
ENV PATH=/opt/runtime/bin:$PATH HF_HOME=/workspace/weights/hf PYTHONUNBUFFERED=1
USER 1000
EXPOSE 5000
CMD ["python3", "/workspace/tfs/inference_api.py"]
