#!/usr/bin/env bash
# Fetches HAProxy from Debian's packages into .tools/haproxy (no root needed) and prints
# the path of a wrapper that runs it with the right library path. Safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if command -v haproxy >/dev/null 2>&1; then command -v haproxy; exit 0; fi
dest=${1:-"$here/../.tools/haproxy"}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
wrapper="$dest/haproxy"
# shellcheck source=deploy/fetch-lib.sh
. "$here/fetch-lib.sh"

ready() { [ -x "$wrapper" ] && "$wrapper" -v >/dev/null 2>&1; }
build() {
    "$here/fetch-deb.sh" "$1" haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1
    # The wrapper names the final folder (the temporary one is renamed to it).
    cat > "$1/haproxy" <<WRAP
#!/usr/bin/env bash
LD_LIBRARY_PATH="$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/usr/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/root/usr/sbin/haproxy" "\$@"
WRAP
    chmod +x "$1/haproxy"
}
fetch_locked "$dest" ready build
"$wrapper" -v >/dev/null
echo "$wrapper"
