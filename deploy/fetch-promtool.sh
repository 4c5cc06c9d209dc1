#!/usr/bin/env bash
# Fetches promtool from Debian's `prometheus` package into .tools/prometheus (no root
# needed) and prints its path. Safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
dest=${1:-"$here/../.tools/prometheus"}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
bin="$dest/root/usr/bin/promtool"
# shellcheck source=deploy/fetch-lib.sh
. "$here/fetch-lib.sh"

ready() { [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; }
build() { "$here/fetch-deb.sh" "$1" prometheus; }
fetch_locked "$dest" ready build
"$bin" --version >/dev/null
echo "$bin"
