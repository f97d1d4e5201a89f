//go:build tools

// Package tools pins the Karpenter kwok cloud-provider command this module builds.
package tools

import _ "sigs.k8s.io/karpenter/kwok"
