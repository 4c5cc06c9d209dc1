#!/usr/bin/env bash
# Fetches HAProxy from Debian's packages into .tools/haproxy (no root needed) and prints
# the path of a wrapper that runs it with the right library path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-"$here/../.tools/haproxy"}
wrapper="$dest/haproxy"
if [ -x "$wrapper" ] && "$wrapper" -v >/dev/null 2>&1; then echo "$wrapper"; exit 0; fi
if command -v haproxy >/dev/null 2>&1; then command -v haproxy; exit 0; fi
"$here/fetch-deb.sh" "$dest" haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1
dest=$(cd "$dest" && pwd)
cat > "$wrapper" <<WRAP
#!/usr/bin/env bash
LD_LIBRARY_PATH="$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/usr/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/root/usr/sbin/haproxy" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" -v >/dev/null
echo "$wrapper"
