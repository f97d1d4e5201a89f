#!/usr/bin/env bash
# Builds one Go command pinned by a wrapper module (tools/<name>/go.mod) from the Go module proxy,
# into a cache directory keyed by the module's version and the wrapper's content, and prints that
# directory as its last line of stdout. Used by the single-binary tools (registry, helm); the
# control plane, Karpenter and KEDA have build scripts of their own because they also copy files.
#
# Usage: go-tool.sh <wrapper dir> <module> <package> <binary> [-- <ldflags>]
# Environment: KAIRYU_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kairyu).
set -euo pipefail

wrapper=$(cd "$1" && pwd)
# shellcheck source=go-progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-progress.sh"
module=$2
package=$3
binary=$4
shift 4
ldflags="-s -w"
if [ "${1:-}" = "--" ]; then
  ldflags="$ldflags $2"
fi
version=$(sed -n "s|^require $module \(v[^ ]*\)$|\1|p" "$wrapper/go.mod")
[ -n "$version" ] || { echo "go-tool.sh: $module is not required in $wrapper/go.mod" >&2; exit 1; }

cache_root=${KAIRYU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kairyu}
wrapper_sum=$(cat "$wrapper/go.mod" "$wrapper/go.sum" "$wrapper/build.sh" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
dest="$cache_root/cluster/${binary}-${version}_${wrapper_sum}"

if [ -x "$dest/$binary" ]; then
  echo "$dest"
  exit 0
fi

command -v go >/dev/null || { echo "go-tool.sh: Go is required to build $binary" >&2; exit 1; }
mkdir -p "$cache_root/cluster"
exec 9>"$cache_root/cluster/.build-$binary.lock"
flock 9
if [ -x "$dest/$binary" ]; then
  echo "$dest"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
tmp=$(mktemp -d "$cache_root/cluster/.build-$binary.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "go-tool.sh: building $binary $version once" >&2
(cd "$wrapper" && go_build "$binary $version" -ldflags "$ldflags" -o "$tmp/$binary" -- "$package")
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "go-tool.sh: built $binary in $(( $(date +%s) - start ))s into $dest" >&2
echo "$dest"
