# One image per kairyu service, from one file:
#   docker build -f images/service.Dockerfile --build-arg SERVICE=watcher -t kairyu-watcher .
# Multi-stage: uv installs the locked environment of that service only (no dev tools), and the
# final stage is a slim Python with the environment, running as a non-root user with no shell
# access needed (the chart runs it with a read-only root filesystem).
ARG PYTHON=3.11
ARG UV=0.13.9

FROM ghcr.io/astral-sh/uv:${UV} AS uv

FROM python:${PYTHON}-slim-bookworm AS build
ARG SERVICE
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/kairyu UV_PYTHON_DOWNLOADS=never
WORKDIR /src
# The lock and every member's pyproject first, so dependency layers survive code changes.
COPY pyproject.toml uv.lock ./
COPY libs/contracts/pyproject.toml libs/contracts/pyproject.toml
COPY libs/core/pyproject.toml libs/core/pyproject.toml
COPY services/watcher/pyproject.toml services/watcher/pyproject.toml
COPY services/planner/pyproject.toml services/planner/pyproject.toml
COPY services/provisioner/pyproject.toml services/provisioner/pyproject.toml
COPY services/deployer/pyproject.toml services/deployer/pyproject.toml
COPY services/tuner/pyproject.toml services/tuner/pyproject.toml
COPY services/activator/pyproject.toml services/activator/pyproject.toml
# The CLI and the dev environment are workspace members too; uv reads their metadata, never installs
# them here (tests/packaging/test_service_environments.py checks what a service's environment holds).
COPY cli/pyproject.toml cli/pyproject.toml
COPY devenv/pyproject.toml devenv/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "$SERVICE" && \
    uv sync --frozen --no-dev --package "kairyu-${SERVICE}" --no-install-workspace
COPY libs libs
COPY services services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "kairyu-${SERVICE}" --no-editable

FROM python:${PYTHON}-slim-bookworm
ARG SERVICE
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin kairyu
COPY --from=build /opt/kairyu /opt/kairyu
ENV PATH=/opt/kairyu/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 KAIRYU_SERVICE=${SERVICE}
USER 10001
ENTRYPOINT ["/bin/sh", "-c", "exec python -m kairyu_${KAIRYU_SERVICE}"]
