#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# etcd, kwok) from the Go module proxy into a cache directory keyed by the pinned versions and the
# wrapper modules' content. A second run with the same pins builds nothing.
#
# Prints the directory holding the binaries as its last line of stdout.
# Environment: KAIRYU_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kairyu).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../go-progress.sh
source "$here/../go-progress.sh"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${KAIRYU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kairyu}
wrappers_sum=$(cat "$here"/versions.env "$here"/*/go.mod "$here"/*/go.sum "$here/build.sh" | sha256sum | cut -c1-12)
key="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${wrappers_sum}"
dest="$cache_root/cluster/$key"

binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)
have_all() { for b in "${binaries[@]}"; do [ -x "$dest/bin/$b" ] || return 1; done; }

if have_all; then
  echo "$dest/bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the control plane" >&2; exit 1; }
mkdir -p "$cache_root/cluster"
exec 9>"$cache_root/cluster/.build.lock"
flock 9
if have_all; then  # another build finished while we waited for the lock
  echo "$dest/bin"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
tmp=$(mktemp -d "$cache_root/cluster/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "tools/cluster/build.sh: building the local control plane once (about 10 minutes on 2 cores):" \
  "Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION" >&2
(cd "$here/kube" && go_build "control plane 1/3: Kubernetes $KUBE_VERSION" \
  -tags selinux,notest -ldflags "$ldflags" -o "$tmp/" -- \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && go_build "control plane 2/3: etcd $ETCD_VERSION" \
  -ldflags "-s -w" -o "$tmp/etcd" -- go.etcd.io/etcd/server/v3)
(cd "$here/kwok" && go_build "control plane 3/3: kwok $KWOK_VERSION" \
  -ldflags "-s -w" -o "$tmp/kwok" -- sigs.k8s.io/kwok/cmd/kwok)

for b in "${binaries[@]}"; do "$tmp/$b" --version >/dev/null 2>&1 || "$tmp/$b" version --client >/dev/null; done
mkdir -p "$dest"
rm -rf "$dest/bin"
mv "$tmp" "$dest/bin"
trap - EXIT
echo "tools/cluster/build.sh: built in $(( $(date +%s) - start ))s into $dest/bin" >&2
echo "$dest/bin"
