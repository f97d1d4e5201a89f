#!/usr/bin/env bash
# Builds the CNCF distribution registry (`registry`) from the Go module proxy into a cache
# directory keyed by the pinned version and this wrapper module's content. The tuning tests push
# adapters to it as OCI images and pull them back; it is the registry Docker Hub and most
# self-hosted registries run.
#
# Prints the directory holding `registry` as its last line of stdout.
# Environment: KAIRYU_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kairyu).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGISTRY_VERSION=$(sed -n 's|^require github.com/distribution/distribution/v3 \(v[^ ]*\)$|\1|p' "$here/go.mod")

cache_root=${KAIRYU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kairyu}
wrapper_sum=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-12)
dest="$cache_root/cluster/registry-${REGISTRY_VERSION}_${wrapper_sum}"

if [ -x "$dest/registry" ]; then
  echo "$dest"
  exit 0
fi

command -v go >/dev/null || { echo "tools/registry/build.sh: Go is required" >&2; exit 1; }
mkdir -p "$cache_root/cluster"
exec 9>"$cache_root/cluster/.build-registry.lock"
flock 9
if [ -x "$dest/registry" ]; then
  echo "$dest"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
tmp=$(mktemp -d "$cache_root/cluster/.build-registry.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "tools/registry/build.sh: building the distribution registry $REGISTRY_VERSION" >&2
(cd "$here" && go build -ldflags "-s -w" -o "$tmp/registry" github.com/distribution/distribution/v3/cmd/registry)
"$tmp/registry" --version >/dev/null
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "tools/registry/build.sh: built in $(( $(date +%s) - start ))s into $dest" >&2
echo "$dest"
