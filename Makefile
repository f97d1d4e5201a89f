# kairyu developer entry points. Two commands matter on a fresh machine:
#   make dev    bring up the local cluster + NATS (+ services, as they land) and keep them until Ctrl-C
#   make test   lint, type-check, and run every test against a real apiserver and nats-server,
#               then the inference runtime's tests on the CPU (images/, its own uv workspace)
# Both install what they need: uv (pinned, into .tools/), the Python environment (uv.lock), and the
# Go-built control plane (tools/cluster/build.sh) and Karpenter with its kwok provider
# (tools/karpenter/build.sh), the OCI registry the tuning tests push to (tools/registry/build.sh)
# helm (tools/helm/build.sh), Jaeger v2 (tools/jaeger/build.sh) and KEDA, its operator and
# external-metrics server (tools/keda/build.sh), each cached by version under ~/.cache/kairyu;
# make dev fetches Zipkin's jar (tools/zipkin/fetch.sh, for the trace UI), and make test installs
# Debian's chromium when it is missing (tools/browser/chromium.sh, for the trace UI's test).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(CURDIR)/.tools/bin/uv
CLUSTER_BIN = $(shell bash tools/cluster/build.sh | tail -n 1)
KARPENTER_DIR = $(shell bash tools/karpenter/build.sh | tail -n 1)
REGISTRY_DIR = $(shell bash tools/registry/build.sh | tail -n 1)
HELM_DIR = $(shell bash tools/helm/build.sh | tail -n 1)
JAEGER_DIR = $(shell bash tools/jaeger/build.sh | tail -n 1)
KEDA_DIR = $(shell bash tools/keda/build.sh | tail -n 1)
CHROMIUM = $(shell bash tools/browser/chromium.sh | tail -n 1)
ARGS ?=

.PHONY: help bench soak chaos sync sync-images cluster karpenter registry helm jaeger keda browser lint lint-images test test-images test-unit dev crds \
	snapshots clean-dev fuzz

help:
	@echo "make dev        local control plane + NATS + services + example Workspace, until Ctrl-C"
	@echo "                (ARGS=\"--backend azure\" or byo; default: real Karpenter)"
	@echo "                (ARGS=\"--bus servicebus\": on Azure Service Bus, a local endpoint, no NATS)"
	@echo "make test       lint + type-check + all tests (unit, contract, integration)"
	@echo "make test-unit  the fast subset: no cluster, no nats-server"
	@echo "make test-images  the runtime server and the tuning entrypoint on the CPU (torch; images/)"
	@echo "make lint       ruff, mypy, import-linter"
	@echo "make fuzz       the Workspace spec fuzz test, long (FUZZ_EXAMPLES=20000); make test runs 500"
	@echo "make bench      N Workspaces at once through the whole system (N=\"10 100 500\"); docs/benchmarks.md"
	@echo "                (ARGS=--backend=byo: on pre-made nodes, no Karpenter; default: real Karpenter)"
	@echo "make soak       TOTAL=2000 Workspaces created and deleted in waves of WAVE=200: RSS and streams stay bounded"
	@echo "make chaos      30 Workspaces rolling out while services are SIGKILLed, NATS and the apiserver restart (make test runs 8)"
	@echo "make crds       regenerate config/crd from kairyu_contracts.api"
	@echo "make snapshots  regenerate docs/bus.md's topology tables, the Service Bus ARM template"
	@echo "                (charts/kairyu/files/servicebus-entities.json), the chart's golden renders"
	@echo "                and docs/images/trace-ui.png (the trace UI's screenshot)"

$(UV):
	@echo "set-up: installing uv $(UV_VERSION) into .tools/ (once)"
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

sync: $(UV)
	@[ -d .venv ] || echo "set-up: creating .venv from uv.lock (once, about 1 minute, 220 MB)"
	$(UV) sync --frozen --quiet

# images/ is a separate uv workspace (torch, transformers, peft): the services never carry them.
sync-images: $(UV)
	@[ -d images/.venv ] || echo "set-up: creating images/.venv (torch on the CPU; once, a few minutes, about 5.7 GB)"
	$(UV) sync --frozen --quiet --directory images

cluster:
	@bash tools/cluster/build.sh

karpenter:
	@bash tools/karpenter/build.sh

registry:
	@bash tools/registry/build.sh

helm:
	@bash tools/helm/build.sh

jaeger:
	@bash tools/jaeger/build.sh

keda:
	@bash tools/keda/build.sh

browser:
	@bash tools/browser/chromium.sh

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

lint-images: sync-images
	$(UV) run --frozen --directory images mypy

test: lint lint-images cluster karpenter registry helm jaeger keda browser
	KAIRYU_CLUSTER_BIN="$(CLUSTER_BIN)" KAIRYU_KARPENTER_DIR="$(KARPENTER_DIR)" \
		KAIRYU_HELM_DIR="$(HELM_DIR)" KAIRYU_JAEGER_DIR="$(JAEGER_DIR)" \
		KAIRYU_KEDA_DIR="$(KEDA_DIR)" KAIRYU_CHROMIUM="$(CHROMIUM)" $(UV) run pytest
	KAIRYU_REGISTRY_DIR="$(REGISTRY_DIR)" $(UV) run --frozen --directory images pytest

test-images: lint-images registry
	KAIRYU_REGISTRY_DIR="$(REGISTRY_DIR)" $(UV) run --frozen --directory images pytest

test-unit: sync
	$(UV) run pytest -m "not integration and not e2e and not packaging"

FUZZ_EXAMPLES ?= 20000
fuzz: sync
	KAIRYU_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(UV) run pytest tests/fuzz -q

dev: sync cluster karpenter jaeger
	KAIRYU_CLUSTER_BIN="$(CLUSTER_BIN)" KAIRYU_KARPENTER_DIR="$(KARPENTER_DIR)" \
		KAIRYU_JAEGER_DIR="$(JAEGER_DIR)" \
		$(UV) run python -m kairyu_localenv $(ARGS)

N ?= 10 100 500
bench: sync cluster karpenter
	KAIRYU_CLUSTER_BIN="$(CLUSTER_BIN)" KAIRYU_KARPENTER_DIR="$(KARPENTER_DIR)" \
		$(UV) run python tests/bench/rollouts.py --n $(N) --write $(ARGS)

TOTAL ?= 2000
WAVE ?= 200
soak: sync cluster karpenter
	KAIRYU_CLUSTER_BIN="$(CLUSTER_BIN)" KAIRYU_KARPENTER_DIR="$(KARPENTER_DIR)" \
		$(UV) run python tests/bench/soak.py --total $(TOTAL) --wave $(WAVE) --write $(ARGS)

CHAOS_WORKSPACES ?= 30
CHAOS_SECONDS ?= 90
chaos: sync cluster karpenter
	KAIRYU_CLUSTER_BIN="$(CLUSTER_BIN)" KAIRYU_KARPENTER_DIR="$(KARPENTER_DIR)" \
		KAIRYU_CHAOS_WORKSPACES=$(CHAOS_WORKSPACES) KAIRYU_CHAOS_SECONDS=$(CHAOS_SECONDS) \
		$(UV) run pytest tests/chaos -q -s

crds: sync
	for plural in $$($(UV) run python -c 'from kairyu_contracts.api.crd import CRDS; print(*CRDS)'); do \
		$(UV) run python -m kairyu_contracts.api $$plural > config/crd/kaito.sh_$$plural.yaml || exit 1; \
		cp config/crd/kaito.sh_$$plural.yaml charts/kairyu/charts/crds/files/; \
	done

snapshots: sync helm cluster karpenter jaeger browser
	KAIRYU_UPDATE_SNAPSHOTS=1 $(UV) run pytest tests/contract -q
	KAIRYU_UPDATE_GOLDEN=1 KAIRYU_HELM_DIR="$(HELM_DIR)" $(UV) run pytest tests/chart/test_chart_render.py -q
	KAIRYU_UPDATE_SNAPSHOTS=1 KAIRYU_CLUSTER_BIN="$(CLUSTER_BIN)" KAIRYU_KARPENTER_DIR="$(KARPENTER_DIR)" \
		KAIRYU_JAEGER_DIR="$(JAEGER_DIR)" KAIRYU_CHROMIUM="$(CHROMIUM)" \
		$(UV) run pytest tests/e2e/test_trace_ui.py -q

clean-dev:
	rm -rf dev-cluster
