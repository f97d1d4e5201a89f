#!/usr/bin/env bash
# The CNCF distribution registry (the OCI registry Docker Hub and most self-hosted registries
# run), for the tuning tests that push adapters and pull them back. Prints the directory holding
# `registry` as its last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../go-tool.sh" "$here" github.com/distribution/distribution/v3 \
  github.com/distribution/distribution/v3/cmd/registry registry
