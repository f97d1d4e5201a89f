#!/usr/bin/env bash
# Builds KEDA's operator and its external-metrics server from the Go module proxy, and copies
# the CRDs they serve (ScaledObject, ScaledJob, TriggerAuthentication, ...) from the same module
# version, into a cache directory keyed by the pinned version and the wrapper module's content.
# Kept apart from tools/cluster so that bumping KEDA does not rebuild the control plane.
#
# Prints the directory holding `keda`, `keda-adapter` and `crds/` as its last line of stdout.
# Environment: KAIRYU_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kairyu).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../go-progress.sh
source "$here/../go-progress.sh"
KEDA_VERSION=$(sed -n 's|^require github.com/kedacore/keda/v2 \(v[^ ]*\)$|\1|p' "$here/go.mod")

cache_root=${KAIRYU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kairyu}
wrapper_sum=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-12)
dest="$cache_root/cluster/keda-${KEDA_VERSION}_${wrapper_sum}"

have_all() {
  [ -x "$dest/keda" ] && [ -x "$dest/keda-adapter" ] && [ -f "$dest/crds/keda.sh_scaledobjects.yaml" ]
}
if have_all; then
  echo "$dest"
  exit 0
fi

command -v go >/dev/null || { echo "tools/keda/build.sh: Go is required" >&2; exit 1; }
mkdir -p "$cache_root/cluster"
exec 9>"$cache_root/cluster/.build-keda.lock"
flock 9
if have_all; then
  echo "$dest"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
tmp=$(mktemp -d "$cache_root/cluster/.build-keda.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "tools/keda/build.sh: building KEDA $KEDA_VERSION once (operator and metrics server, about 10 minutes)" >&2
(cd "$here" && go_build "KEDA 1/2: operator" -ldflags "-s -w" -o "$tmp/keda" -- \
  github.com/kedacore/keda/v2/cmd/operator)
(cd "$here" && go_build "KEDA 2/2: metrics server" -ldflags "-s -w" -o "$tmp/keda-adapter" -- \
  github.com/kedacore/keda/v2/cmd/adapter)
module_dir=$(cd "$here" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)
mkdir -p "$tmp/crds"
cp "$module_dir"/config/crd/bases/*.yaml "$tmp/crds/"
chmod -R u+w "$tmp/crds"
"$tmp/keda" --help >/dev/null 2>&1
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "tools/keda/build.sh: built in $(( $(date +%s) - start ))s into $dest" >&2
echo "$dest"
