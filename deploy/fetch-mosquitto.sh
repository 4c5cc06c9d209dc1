#!/usr/bin/env bash
# Fetches mosquitto (a peer in herald-bench) from Debian's packages into .tools/mosquitto
# without root and prints the binary's path; its libraries are in root/usr/lib/x86_64-linux-gnu.
# Safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-"$here/../.tools/mosquitto"}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
bin="$dest/root/usr/sbin/mosquitto"
# shellcheck source=deploy/fetch-lib.sh
. "$here/fetch-lib.sh"

ready() { [ -x "$bin" ]; }
build() {
    "$here/fetch-deb.sh" "$1" mosquitto libmosquitto1 libwebsockets17 libcjson1 libev4 libuv1 \
        libwrap0 libdlt2
}
fetch_locked "$dest" ready build
echo "$bin"
