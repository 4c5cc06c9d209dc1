# Sourced by the fetch-*.sh scripts: installs a tool into its folder under .tools/ so that
# any number of callers may run at once (tests run in parallel; two may want HAProxy).
#   fetch_locked DEST READY BUILD
# takes an exclusive lock for DEST (DEST.lock; a second caller waits), returns at once if
# READY (a command) says DEST is complete, else runs BUILD TMP (which must leave a finished
# install in the fresh folder TMP, wrappers last) and renames TMP to DEST. A caller never
# sees a half-unpacked DEST: it is either absent, the old complete one, or the new one.
fetch_locked() {
    local dest=$1 ready=$2 build=$3
    mkdir -p "$(dirname "$dest")"
    exec 9>"$dest.lock"
    flock 9
    if "$ready"; then return 0; fi
    local tmp
    tmp=$(mktemp -d "$dest.tmp.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    "$build" "$tmp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    trap - EXIT
}
