//go:build tools

// Package tools pins the CNCF distribution registry, the local OCI registry the tuning tests push
// adapters to and pull them back from.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
