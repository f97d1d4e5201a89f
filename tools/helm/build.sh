#!/usr/bin/env bash
# helm v3, for the chart tests (lint, template, install into the local cluster). The version is
# stamped in, because without ldflags `helm version` reports only "v3.21". Prints the directory
# holding `helm` as its last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(sed -n 's|^require helm.sh/helm/v3 \(v[^ ]*\)$|\1|p' "$here/go.mod")
exec bash "$here/../go-tool.sh" "$here" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm helm \
  -- "-X helm.sh/helm/v3/internal/version.version=$version"
