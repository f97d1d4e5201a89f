//go:build tools

// Package tools pins the KEDA commands this module builds: the operator and its metrics server.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
