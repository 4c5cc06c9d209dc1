#!/usr/bin/env bash
# Fetches promtool from Debian's `prometheus` package into .tools/prometheus (no root
# needed) and prints its path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-"$here/../.tools/prometheus"}
bin="$dest/root/usr/bin/promtool"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
"$here/fetch-deb.sh" "$dest" prometheus
"$bin" --version >/dev/null
echo "$bin"
