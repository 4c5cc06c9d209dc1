#!/usr/bin/env bash
# Fetches Chromium from Debian's packages (with the libraries a bare machine lacks) into
# .tools/chromium without root, and prints the path of a wrapper that runs it headless-ready.
# Uses /usr/bin/chromium when the machine already has it. Safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -x /usr/bin/chromium ]; then echo /usr/bin/chromium; exit 0; fi
dest=${1:-"$here/../.tools/chromium"}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
wrapper="$dest/chromium"
# shellcheck source=deploy/fetch-lib.sh
. "$here/fetch-lib.sh"

ready() { [ -x "$wrapper" ]; }
build() {
    # What `apt-get install --no-install-recommends chromium` adds to a Debian 12 base.
    "$here/fetch-deb.sh" "$1" chromium chromium-common libdouble-conversion3 libogg0 libflac12 \
        libharfbuzz-subset0 libminizip1 libopenh264-7 libopenjp2-7 libopus0 libasyncns0 libmp3lame0 \
        libmpg123-0 libvorbis0a libvorbisenc2 libsndfile1 libpulse0 libxnvctrl0 libcolord2 libepoxy0 \
        libwayland-cursor0 libwayland-egl1 libgtk-3-common libgtk-3-0
    local lib="$dest/root/usr/lib/x86_64-linux-gnu"
    # The wrapper names the final folder (the temporary one is renamed to it).
    cat > "$1/chromium" <<WRAP
#!/usr/bin/env bash
LD_LIBRARY_PATH="$lib:$lib/pulseaudio:$dest/root/usr/lib/chromium\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/root/usr/lib/chromium/chromium" "\$@"
WRAP
    chmod +x "$1/chromium"
}
fetch_locked "$dest" ready build
echo "$wrapper"
