#!/usr/bin/env bash
# Downloads Debian packages and unpacks them into DEST/root, without root: `apt-get
# download` (with a private package-list directory if the system lists are missing), then
# `dpkg-deb -x`. Used by fetch-haproxy.sh and fetch-promtool.sh.
#   deploy/fetch-deb.sh DEST PACKAGE...
set -euo pipefail
mkdir -p "$1"
dest=$(cd "$1" && pwd); shift
mkdir -p "$dest/debs" "$dest/root" "$dest/apt/lists/partial" "$dest/apt/cache/archives/partial"
apt_opts=(-o "Dir::State::Lists=$dest/apt/lists" -o "Dir::Cache=$dest/apt/cache" -o "Debug::NoLocking=1")
cd "$dest/debs"
if ! apt-get download "$@" >/dev/null 2>&1; then
    apt-get "${apt_opts[@]}" update >/dev/null 2>&1
    apt-get "${apt_opts[@]}" download "$@" >/dev/null 2>&1
fi
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$dest/root"
done
