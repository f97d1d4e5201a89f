#!/usr/bin/env bash
# Jaeger v2 (an OpenTelemetry Collector distribution with a trace store and the query API), which
# `make dev` runs to receive the services' OTLP spans and which `kairyu trace` reads. Its web UI is
# not in the module zip, so the binary serves a placeholder page; ingest and the query API work.
# Prints the directory holding `jaeger` as its last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../go-tool.sh" "$here" github.com/jaegertracing/jaeger \
  github.com/jaegertracing/jaeger/cmd/jaeger jaeger
