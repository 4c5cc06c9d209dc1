#!/usr/bin/env bash
# Fetches HAProxy from Debian's packages into a project-local folder, without root:
# `apt-get download` with a private package-list directory, then `dpkg-deb -x`.
# Prints the path of a wrapper that runs it with the right library path.
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.tools/haproxy"}
wrapper="$dest/haproxy"
if [ -x "$wrapper" ] && "$wrapper" -v >/dev/null 2>&1; then
    echo "$wrapper"
    exit 0
fi
if command -v haproxy >/dev/null 2>&1; then
    command -v haproxy
    exit 0
fi
mkdir -p "$dest/debs" "$dest/root" "$dest/apt/lists/partial" "$dest/apt/cache/archives/partial"
apt_opts=(-o "Dir::State::Lists=$dest/apt/lists" -o "Dir::Cache=$dest/apt/cache" -o "Debug::NoLocking=1")
cd "$dest/debs"
packages=(haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1)
if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
    apt-get "${apt_opts[@]}" update >/dev/null 2>&1
    apt-get "${apt_opts[@]}" download "${packages[@]}" >/dev/null 2>&1
fi
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$dest/root"
done
cat > "$wrapper" <<WRAP
#!/usr/bin/env bash
LD_LIBRARY_PATH="$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/usr/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/root/usr/sbin/haproxy" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" -v >/dev/null
echo "$wrapper"
