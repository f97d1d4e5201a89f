#!/usr/bin/env bash
# Finds Debian's chromium for the browser test of the trace UI (tests/e2e/test_trace_ui.py), and
# installs it with apt when it is missing: playwright's own browser downloads are not reachable
# from every machine, Debian's package is. Installing needs root (or sudo without a password).
#
# Prints the browser's path as its last line of stdout.
set -euo pipefail

for name in chromium chromium-browser; do
  if path=$(command -v "$name"); then
    echo "$path"
    exit 0
  fi
done

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "tools/browser/chromium.sh: chromium is missing and installing it needs root:" \
      "sudo apt-get install chromium" >&2
    exit 1
  fi
fi
echo "tools/browser/chromium.sh: installing Debian's chromium (124 MB download, 414 MB on disk, once)" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet.
"${sudo[@]}" apt-get install -y --no-install-recommends chromium >&2 \
  || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y --no-install-recommends chromium >&2; }
command -v chromium
