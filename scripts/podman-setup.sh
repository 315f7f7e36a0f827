#!/usr/bin/env bash
# A container engine for `docker compose up` on a machine with no Docker and no image registry:
# Debian's podman behind its Docker API socket, and stand-ins for the public base images built
# from Debian's packages (issue 9; the recipe is in docs/operations.md, "Compose, run for real here").
#
#   scripts/podman-setup.sh                 install podman, write its config, build the stand-ins
#   scripts/podman-setup.sh serve SOCKET    run podman's Docker API on unix://SOCKET (foreground;
#                                           stop it by its PID)
#   scripts/podman-setup.sh podman ARGS...  podman itself, on the same storage (e.g. `images`)
#
# Everything podman keeps lives under $PODMAN_STATE (default /var/cache/llm-stream-service/podman)
# and /run/llm-stream-service: the script writes no file under /etc/containers and never resets
# another podman user's storage. podman reads this configuration through CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF, which every subcommand sets.
#
# Stand-ins (tagged with the public names the Dockerfiles use, so the files keep the public
# images as defaults; each carries the label $KEY_LABEL with a hash of its inputs and is rebuilt
# only when that changes):
#   localhost/python:3.11-slim        Debian bookworm's Python 3.11.2 (debootstrap), not the
#                                     official image's build
#   localhost/node:20-bookworm-slim   the same root filesystem with this machine's node and npm
#   localhost/nginx-debian:bookworm   the same root filesystem with Debian's nginx; the web image
#                                     takes it through its WEB_IMAGE build argument
#
# Idempotent; every long step runs under `timeout`. Runs as root (through sudo otherwise): apt,
# debootstrap and podman's rootful mode need it.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=PODMAN_STATE,PODMAN_RUN,PODMAN_STORAGE_DRIVER "$0" "$@"
fi

PODMAN_STATE=${PODMAN_STATE:-/var/cache/llm-stream-service/podman}
PODMAN_RUN=${PODMAN_RUN:-/run/llm-stream-service/podman}
SUITE=bookworm
ROOTFS_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
KEY_LABEL=io.llm-stream-service.stand-in-key
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { printf '[podman-setup %s] %s\n' "$(date +%T)" "$*" >&2; }

install_packages() {
    local missing=()
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    # Compose's services reach each other by name (`web` proxies to `chat`): podman 4.3's CNI
    # networks resolve container names only with the dnsname plugin.
    [ -x /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} (apt-get)"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Only writes a file when its content changes; returns 0 when it did.
write_if_changed() {
    local path=$1 content=$2
    if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
        return 1
    fi
    printf '%s\n' "$content" >"$path"
}

# overlay when this kernel lets us mount it here (a much faster build: vfs copies the whole file
# system for every layer and container), else vfs, which works anywhere. Each driver has its own
# store, so switching never needs `podman system reset`.
storage_driver() {
    if [ -n "${PODMAN_STORAGE_DRIVER:-}" ]; then
        echo "$PODMAN_STORAGE_DRIVER"
        return
    fi
    local probe driver=vfs
    probe=$(mktemp -d "$PODMAN_STATE/overlay-probe.XXXXXX")
    mkdir "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
    if mount -t overlay overlay \
        -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
        "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        driver=overlay
    fi
    rm -rf "$probe"
    echo "$driver"
}

# Writes podman's two configuration files for the storage driver in use, and points podman at
# them (CONTAINERS_STORAGE_CONF, CONTAINERS_CONF).
write_config() {
    mkdir -p "$PODMAN_STATE" "$PODMAN_RUN"
    local driver
    driver=$(storage_driver)
    export CONTAINERS_STORAGE_CONF=$PODMAN_STATE/storage-$driver.conf
    export CONTAINERS_CONF=$PODMAN_STATE/containers-$driver.conf
    write_if_changed "$CONTAINERS_STORAGE_CONF" "[storage]
driver = \"$driver\"
runroot = \"$PODMAN_RUN/storage-$driver\"
graphroot = \"$PODMAN_STATE/storage-$driver\"" || true
    # Raising rlimits is not permitted here (the default ulimits fail with `setrlimit
    # RLIMIT_NOFILE: Operation not permitted`), and crun fails with "cgroups in hybrid mode not
    # supported": runc with cgroupfs. tmp_dir keeps podman's run-time state apart from any other
    # podman storage on the machine.
    write_if_changed "$CONTAINERS_CONF" "[containers]
default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
tmp_dir = \"$PODMAN_RUN/libpod-$driver\"" || true
}

sha() { sha256sum | cut -c1-16; }

image_key() {
    podman image inspect --format "{{ index .Config.Labels \"$KEY_LABEL\" }}" "$1" 2>/dev/null || true
}

# debootstrap's root filesystem, imported as localhost/debian-py:SUITE. The tarball is kept in
# $PODMAN_STATE (named by a hash of what went into it) so that a wiped image store does not need
# debootstrap again.
ROOTFS_IMPORT_CHANGES=(
    # An imported tarball has no environment: PATH as in the official images.
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

build_rootfs() {
    local tar_key tarball image=localhost/debian-py:$SUITE change changes=()
    tar_key=$(printf '%s %s %s' "$SUITE" "$ROOTFS_PACKAGES" "$(dpkg --print-architecture)" | sha)
    ROOTFS_KEY=$(printf '%s\n' "$tar_key" "${ROOTFS_IMPORT_CHANGES[@]}" | sha)
    [ "$(image_key "$image")" = "$ROOTFS_KEY" ] && return 0
    tarball=$PODMAN_STATE/rootfs-$SUITE-$tar_key.tar
    if [ ! -f "$tarball" ]; then
        local dir
        dir=$(mktemp -d "$PODMAN_STATE/rootfs.XXXXXX")
        chmod 755 "$dir"  # it becomes the image's `/`; mktemp made it 0700
        log "debootstrap $SUITE ($ROOTFS_PACKAGES); about a minute"
        timeout 600 debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
            "$SUITE" "$dir" >"$PODMAN_STATE/debootstrap.log" 2>&1 ||
            { tail -20 "$PODMAN_STATE/debootstrap.log" >&2; rm -rf "$dir"; return 1; }
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
        tar -C "$dir" -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$dir"
    fi
    log "importing $tarball as $image"
    for change in "${ROOTFS_IMPORT_CHANGES[@]}" "LABEL $KEY_LABEL=$ROOTFS_KEY"; do
        changes+=(--change "$change")
    done
    timeout 300 podman import --quiet "${changes[@]}" "$tarball" "$image" >/dev/null
}

# build_stand_in IMAGE CONTEXT_DIR: builds CONTEXT_DIR/Containerfile unless an image with the
# same inputs (Containerfile and every file beside it) exists.
build_stand_in() {
    local image=$1 context=$2 key
    key=$( (
        echo "$ROOTFS_KEY"
        cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum
    ) | sha)
    if [ "$(image_key "$image")" = "$key" ]; then
        log "$image is up to date"
        return 0
    fi
    log "building $image"
    # --network host: apt and npm inside the build reach the package mirrors the host reaches.
    timeout 600 podman build --quiet --isolation chroot --network host --format docker \
        --label "$KEY_LABEL=$key" -t "$image" "$context" >/dev/null
}

# Each stand-in adds one layer to the base (a directory tree copied to `/`): with the vfs driver
# every layer is a full copy of the file system, so fewer layers build much faster.
build_stand_ins() {
    local work base root
    work=$(mktemp -d)
    base=localhost/debian-py:$SUITE

    # Package downloads here go through a proxy whose CA only the host's bundle trusts.
    root=$work/python/root
    mkdir -p "$root/etc/ssl/certs" "$root/usr/local/bin"
    cp "$HOST_CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    ln -s /usr/bin/python3 "$root/usr/local/bin/python"
    ln -s /usr/bin/pip3 "$root/usr/local/bin/pip"
    # Like the official image: python and pip on PATH, pip may install into the system Python
    # (PIP_BREAK_SYSTEM_PACKAGES rather than deleting Debian's EXTERNALLY-MANAGED, which would
    # take a second layer).
    cat >"$work/python/Containerfile" <<EOF
FROM $base
COPY root/ /
ENV LANG=C.UTF-8 PIP_BREAK_SYSTEM_PACKAGES=1
CMD ["python3"]
EOF
    build_stand_in localhost/python:3.11-slim "$work/python"

    # bookworm's nodejs is 18.x and Vite needs 20 or newer: this machine's node 20 and npm.
    local node npm_dir
    node=$(readlink -f "$(command -v node)")
    npm_dir=$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")
    root=$work/node/root
    mkdir -p "$root/etc/ssl/certs" "$root/usr/local/bin" "$root/usr/local/lib/node_modules"
    cp "$HOST_CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    cp "$node" "$root/usr/local/bin/node"
    cp -r "$npm_dir" "$root/usr/local/lib/node_modules/npm"
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
    ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
    cat >"$work/node/Containerfile" <<EOF
FROM $base
COPY root/ /
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8
CMD ["node"]
EOF
    build_stand_in localhost/node:20-bookworm-slim "$work/node"

    # Debian's nginx (apt over plain http: no CA needed) laid out like the official image:
    # /etc/nginx/nginx.conf and mime.types, `nginx -g 'daemon off;'` in the foreground.
    mkdir -p "$work/nginx"
    cat >"$work/nginx/Containerfile" <<EOF
FROM $base
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx \\
        >/dev/null \\
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
    build_stand_in localhost/nginx-debian:$SUITE "$work/nginx"
    rm -rf "$work"
}

setup() {
    install_packages
    write_config
    build_rootfs
    build_stand_ins
    # Untagged images (earlier stand-ins and compose builds) older than a week. Younger ones
    # stay: they include the cache of the web image's node stage (npm ci), whose last image
    # nothing refers to.
    timeout 300 podman image prune --force --filter until=168h >/dev/null
    log "ready"
}

case ${1:-setup} in
    setup) setup ;;
    serve)
        [ $# -eq 2 ] || { echo "usage: $0 serve SOCKET_PATH" >&2; exit 2; }
        write_config
        exec podman system service --time 0 "unix://$2"
        ;;
    podman)
        shift
        write_config
        exec podman "$@"
        ;;
    *)
        echo "usage: $0 [setup | serve SOCKET_PATH | podman ARGS...]" >&2
        exit 2
        ;;
esac
