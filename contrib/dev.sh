#!/usr/bin/env bash
# Set up casfs on a Debian machine and mount the default store, or run the tests.
#
#   bash contrib/dev.sh mount [MOUNTPOINT]   set up, create the default store, mount it
#                                            (default mountpoint: ~/casfs)
#   bash contrib/dev.sh test [PYTEST ARGS]   set up, lint, type-check, run the whole suite
#   bash contrib/dev.sh setup                only set up
#
# Setting up installs the system packages FUSE needs (with apt-get, when missing),
# creates .venv in the repository and installs casfs into it (editable, with the
# test tools). Run as root, or as a user who may use sudo for apt-get.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
packages=(fuse3 libfuse3-dev pkg-config gcc rsync sqlite3 strace python3-dev postgresql-15)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

setup() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then missing+=(python3-venv); fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dev.sh: installing ${missing[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$repo[test]"
    # mount(8) looks for /sbin/mount.fuse.casfs for fstab lines of type fuse.casfs.
    if [ "$(id -u)" -eq 0 ] && [ -d /sbin ]; then
        ln -sf "$venv/bin/mount.fuse.casfs" /sbin/mount.fuse.casfs
    fi
}

typecheck() {
    # casfs/mount and casfs/tools are links to mount/ and tools/, so the tree has the
    # installed layout and plain mypy works from the repository root.
    (cd "$repo" && "$venv/bin/mypy" --strict)
}

cmd=${1:-}
shift || true
case "$cmd" in
    setup)
        setup ;;
    mount)
        setup
        mountpoint=${1:-$HOME/casfs}
        mkdir -p "$mountpoint"
        "$venv/bin/casfs" init
        "$venv/bin/casfs" mount "$mountpoint"
        echo "unmount with: $venv/bin/casfs umount $mountpoint" ;;
    test)
        setup
        "$venv/bin/ruff" check "$repo"
        typecheck
        cd "$repo"
        status=0
        "$venv/bin/pytest" "$@" || status=$?
        # 5: pytest collected no test, which is a failure here too.
        exit "$status" ;;
    *)
        sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 2 ;;
esac
