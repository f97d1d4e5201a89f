#!/usr/bin/env bash
# Builds Karpenter with its kwok cloud provider from the Go module proxy, and copies the CRDs it
# needs (NodeClaim, NodePool, NodeOverlay, CapacityBuffer, KWOKNodeClass) from the same module
# version, into a cache directory keyed by the pinned version and the wrapper module's content.
# Kept apart from tools/cluster so that bumping Karpenter does not rebuild the control plane.
#
# Prints the directory holding `karpenter-kwok` and `crds/` as its last line of stdout.
# Environment: KAIRYU_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kairyu).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../go-progress.sh
source "$here/../go-progress.sh"
KARPENTER_VERSION=$(sed -n 's|^require sigs.k8s.io/karpenter \(v[^ ]*\)$|\1|p' "$here/go.mod")

cache_root=${KAIRYU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kairyu}
wrapper_sum=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-12)
dest="$cache_root/cluster/karpenter-${KARPENTER_VERSION}_${wrapper_sum}"

have_all() { [ -x "$dest/karpenter-kwok" ] && [ -f "$dest/crds/karpenter.sh_nodeclaims.yaml" ]; }
if have_all; then
  echo "$dest"
  exit 0
fi

command -v go >/dev/null || { echo "tools/karpenter/build.sh: Go is required" >&2; exit 1; }
mkdir -p "$cache_root/cluster"
exec 9>"$cache_root/cluster/.build-karpenter.lock"
flock 9
if have_all; then
  echo "$dest"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
tmp=$(mktemp -d "$cache_root/cluster/.build-karpenter.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "tools/karpenter/build.sh: building Karpenter $KARPENTER_VERSION with its kwok provider once (about 4 minutes)" >&2
(cd "$here" && go_build "Karpenter $KARPENTER_VERSION" -ldflags "-s -w" -o "$tmp/karpenter-kwok" -- \
  sigs.k8s.io/karpenter/kwok)
module_dir=$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/karpenter)
mkdir -p "$tmp/crds"
cp "$module_dir"/kwok/charts/crds/*.yaml "$module_dir"/kwok/apis/crds/*.yaml "$tmp/crds/"
chmod -R u+w "$tmp/crds"
"$tmp/karpenter-kwok" --help >/dev/null 2>&1
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "tools/karpenter/build.sh: built in $(( $(date +%s) - start ))s into $dest" >&2
echo "$dest"
