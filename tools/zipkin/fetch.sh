#!/usr/bin/env bash
# Fetches Zipkin's server (its exec jar from Maven Central: the server and its browser UI, run on
# Java 17+) once into a cache directory keyed by the pinned version, and checks the jar's sha256.
# `make dev` runs it so that a rollout's trace opens in a browser (docs/observability.md).
#
# Prints the directory holding zipkin.jar as its last line of stdout.
# Environment: KAIRYU_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kairyu).
set -euo pipefail

ZIPKIN_VERSION=3.6.1
ZIPKIN_SHA256=d8326e0ed4f43855dba81228f688554706e52578a7c782d9a90b73f8680654a1
url="https://repo1.maven.org/maven2/io/zipkin/zipkin-server/$ZIPKIN_VERSION/zipkin-server-$ZIPKIN_VERSION-exec.jar"

cache_root=${KAIRYU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kairyu}
dest="$cache_root/zipkin-$ZIPKIN_VERSION"

if [ -f "$dest/zipkin.jar" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.fetch-zipkin.lock"
flock 9
if [ -f "$dest/zipkin.jar" ]; then
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d "$cache_root/.fetch-zipkin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "tools/zipkin/fetch.sh: downloading Zipkin $ZIPKIN_VERSION (135 MB, once) from Maven Central" >&2
# A progress bar on a terminal; in a log (CI), only errors.
progress=(--silent --show-error)
[ -t 2 ] && progress=(--progress-bar)
curl --fail --location --retry 3 "${progress[@]}" -o "$tmp/zipkin.jar" "$url"
echo "$ZIPKIN_SHA256  $tmp/zipkin.jar" | sha256sum --check --quiet - >&2 \
  || { echo "tools/zipkin/fetch.sh: $url does not have the pinned sha256" >&2; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
