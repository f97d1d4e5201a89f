//go:build tools

// Package tools pins Jaeger v2, the trace store and query API `make dev` runs.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
