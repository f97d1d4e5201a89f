//go:build tools

// Package tools pins helm, which renders, lints and installs kairyu's chart in the tests.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
