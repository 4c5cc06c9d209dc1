#!/usr/bin/env bash
# Installs the npm packages of DIR (its package-lock.json, `npm ci`) into DIR/node_modules,
# safe to run concurrently: under a lock, into a fresh folder that is then renamed into
# place, and only when the lock file changed since the last install.
#   deploy/fetch-npm.sh tests/browser
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "$1" && pwd)
dest="$dir/node_modules"
stamp="$dest/.herald-lock"
# shellcheck source=deploy/fetch-lib.sh
. "$here/fetch-lib.sh"

ready() { [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; }
build() {
    local work
    work=$(mktemp -d "$dir/.npm.XXXXXX")
    cp "$dir/package.json" "$dir/package-lock.json" "$work/"
    (cd "$work" && npm ci --no-audit --no-fund --silent >&2)
    rmdir "$1"
    mv "$work/node_modules" "$1"
    cp "$dir/package-lock.json" "$1/.herald-lock"
    rm -rf "$work"
}
fetch_locked "$dest" ready build
echo "$dest"
