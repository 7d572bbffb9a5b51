#!/usr/bin/env bash
# Build VoidRunner's language images offline (no container registry), as the language catalog
# (languages/catalog.toml) defines them:
#   debootstrap --variant=minbase trixie BASE MIRROR      (once, cached)
#   copy BASE, chroot apt-get install <the image's packages>, strip, check the version
#   tar -C ROOTFS -c . | docker import - voidrunner/<image>:<version>
#   and the same root filesystem, unpacked, for the native sandbox backend:
#   $VOIDRUNNER_SANDBOX_ROOTFS_DIR/voidrunner/<image>:<version>/<definition>/{rootfs,env},
#   with `current` naming the version in use (the one before is kept for running sandboxes).
# An image is labelled with a digest of its definition and rebuilt only when that changes.
# Every image has tini, the init of native sandboxes.
#
# Usage: scripts/build-images.sh [IMAGE...] [all] [compose-base]
#   no argument = every image of the catalog (python node bash go rust gcc java ...).
#   compose-base: the base of compose/standins.sh (stand-ins for nats, postgres, nginx), from
#   Debian 12.
#
# Environment:
#   VOIDRUNNER_LANGUAGES_CATALOG  the catalog (default: languages/catalog.toml of this checkout)
#   VOIDRUNNER_DEBIAN_MIRROR  Debian mirror (default: taken from the apt configuration)
#   VOIDRUNNER_IMAGE_CACHE    cache dir (default /var/cache/voidrunner)
#   VOIDRUNNER_BUILD_JOBS     images built at once (default 2)
#   VOIDRUNNER_FORCE_REBUILD  1 = discard cached root filesystems and rebuild every image asked for
#   VOIDRUNNER_SANDBOX_ROOTFS_DIR  where the unpacked images go (default /var/lib/voidrunner/rootfs)
#
# Progress goes to stderr, prefixed with "==> ".
set -euo pipefail

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/services.sh
source "$SCRIPTS_DIR/lib/services.sh"

CATALOG="${VOIDRUNNER_LANGUAGES_CATALOG:-$SCRIPTS_DIR/../languages/catalog.toml}"
CACHE="${VOIDRUNNER_IMAGE_CACHE:-/var/cache/voidrunner}"
JOBS="${VOIDRUNNER_BUILD_JOBS:-2}"
ROOTFS_DIR="${VOIDRUNNER_SANDBOX_ROOTFS_DIR:-/var/lib/voidrunner/rootfs}"
# The language images come from Debian 13; the compose stand-ins from Debian 12.
SUITE=trixie
COMPOSE_SUITE=bookworm
IMAGE_PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

log() { printf '==> %s\n' "$*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }
catalog() { python3 "$SCRIPTS_DIR/lib/catalog.py" "$CATALOG" "$@"; }

# The Debian mirror of the host's own suite (Debian 12) in the apt configuration (deb822 .sources or sources.list).
detect_mirror() {
    if [[ -n "${VOIDRUNNER_DEBIAN_MIRROR:-}" ]]; then
        echo "$VOIDRUNNER_DEBIAN_MIRROR"; return
    fi
    local m=""
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        m="$(awk -v suite="$COMPOSE_SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "" && found == "") {
                    split(uris, u, " "); found = u[1]
                }
                types = ""; uris = ""; suites = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
            /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            END { flush(); if (found != "") print found }' "$f")"
        [[ -n "$m" ]] && break
    done
    if [[ -z "$m" ]]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -f "$f" ]] || continue
            m="$(awk -v suite="$COMPOSE_SUITE" '
                $1 == "deb" {
                    i = 2
                    if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f")"
            [[ -n "$m" ]] && break
        done
    fi
    m="${m%/}"
    echo "${m:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    log "installing debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring >/dev/null
}

# Unmount anything left mounted inside a rootfs (a killed debootstrap can leave
# proc/sys mounted), then delete it without crossing into other filesystems.
remove_rootfs() {
    local dir="$1" mp
    [[ -e "$dir" ]] || return 0
    while read -r mp; do
        umount -l "$mp" 2>/dev/null || true
    done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf --one-file-system "$dir"
}

# Strip what a sandbox never needs: apt lists/caches, docs, man pages, locales, logs.
clean_rootfs() {
    local r="$1"
    rm -rf "$r"/var/lib/apt/lists/* \
           "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
           "$r"/var/cache/apt/archives/partial/* \
           "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old \
           "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
           "$r"/usr/share/lintian "$r"/usr/share/linda \
           "$r"/usr/share/bug "$r"/usr/share/common-licenses
    # Locales: keep only the alias file (no locales package is installed anyway).
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    find "$r/var/log" -type f -delete 2>/dev/null || true
    # __pycache__ (byte-compiled stdlib) is kept on purpose: the sandbox root is
    # read-only, so without it every run would recompile what it imports.
    rm -f "$r"/etc/machine-id "$r"/var/lib/dbus/machine-id
}

# debootstrap a minbase root filesystem of SUITE into DIR (skipped when DIR.done exists).
debootstrap_into() {
    local suite="$1" dir="$2" include="$3" mirror="$4" logf="$5"
    if [[ "${VOIDRUNNER_FORCE_REBUILD:-0}" == 1 ]]; then rm -f "$dir.done"; fi
    if [[ -f "$dir.done" && -x "$dir/usr/bin/env" ]]; then
        return 0
    fi
    rm -f "$dir.done"
    remove_rootfs "$dir"
    mkdir -p "$(dirname "$dir")" "$(dirname "$logf")" "$CACHE/debs/$suite"
    log "debootstrap --variant=minbase $suite${include:+ --include=$include} (log: $logf)"
    local -a args=(--variant=minbase --cache-dir="$CACHE/debs/$suite")
    [[ -n "$include" ]] && args+=(--include="$include")
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
        args+=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    if ! debootstrap "${args[@]}" "$suite" "$dir" "$mirror" >"$logf" 2>&1; then
        tail -n 20 "$logf" >&2
        remove_rootfs "$dir"
        die "debootstrap of $suite failed (full log: $logf)"
    fi
    echo "$suite-$(date -u +%Y%m%dT%H%M%SZ)" > "$dir.done"
}

# The Debian 13 base every language image starts from, with the package lists in place.
build_base() {
    local mirror="$1" base="$CACHE/$SUITE/base" start
    start=$(now_ms)
    if [[ -f "$base.done" && -f "$base/var/lib/apt/lists/.voidrunner-updated" ]]; then
        return 0
    fi
    debootstrap_into "$SUITE" "$base" "" "$mirror" "$CACHE/logs/base-$SUITE.log"
    echo "deb $mirror $SUITE main" > "$base/etc/apt/sources.list"
    rm -f "$base"/etc/apt/sources.list.d/*
    cp /etc/resolv.conf "$base/etc/resolv.conf"
    chroot "$base" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin apt-get update -qq \
        >"$CACHE/logs/base-$SUITE-update.log" 2>&1 || die "apt-get update in the $SUITE base failed"
    touch "$base/var/lib/apt/lists/.voidrunner-updated"
    log "base $SUITE ready in $(secs "$start") s"
}

# Runs a command in ROOT with /proc and /dev mounted (Java's and others' postinst scripts
# need them), unmounting them afterwards whatever happens.
in_chroot() {
    local root="$1"; shift
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    local status=0
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root DEBIAN_FRONTEND=noninteractive "$@" || status=$?
    umount -l "$root/dev" 2>/dev/null || true
    umount -l "$root/proc" 2>/dev/null || true
    return "$status"
}

# Makes ROOT (a finished root filesystem, moved away) the unpacked version DEFINITION of image
# TAG for native sandboxes, with the image's environment, and points `current` at it. Without
# ROOT, unpacks the image from Docker (an image built before, whose unpacked copy is missing).
install_rootfs() {
    local tag="$1" definition="$2" root="${3:-}"
    local dir="$ROOTFS_DIR/$tag" version
    version="$dir/$definition"
    if [[ -d "$version/rootfs" && -f "$version/env" ]]; then
        [[ -n "$root" ]] && remove_rootfs "$root"
    else
        mkdir -p "$dir"
        rm -rf --one-file-system "$version.new"
        mkdir -p "$version.new"
        if [[ -n "$root" ]]; then
            mv "$root" "$version.new/rootfs"
        else
            local cid
            cid="$(docker create "$tag" /bin/true)"
            mkdir -p "$version.new/rootfs"
            docker export "$cid" | tar --numeric-owner -C "$version.new/rootfs" -x
            docker rm "$cid" >/dev/null
        fi
        docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$tag" \
            | grep '=' > "$version.new/env" || true
        # The sandbox's users (mapped far from the host's) read it as "others".
        chmod 755 "$ROOTFS_DIR" "$ROOTFS_DIR/${tag%%/*}" "$dir" "$version.new" "$version.new/rootfs"
        rm -rf --one-file-system "$version"
        mv "$version.new" "$version"
    fi
    ln -sfn "$definition" "$dir/current.new" && mv -T "$dir/current.new" "$dir/current"
    # Keep the version in use and the one before it (sandboxes may still run on that).
    local old
    for old in $(ls -1t "$dir" | grep -v -x -e current -e "$definition" | tail -n +2); do
        rm -rf --one-file-system "${dir:?}/$old"
    done
}

# Builds catalog image NAME (in a background job), unless an image of the same definition
# exists. Writes its own log.
build_image() {
    local name="$1" TAG PACKAGES CHECK EXPECT LANGUAGES DEFINITION SETUP
    local -a ENVS=()
    eval "$(catalog image "$name")"
    local have start root logf="$CACHE/logs/$name.log"
    have="$(docker image inspect --format '{{index .Config.Labels "org.voidrunner.definition"}}' "$TAG" 2>/dev/null || true)"
    if [[ "$have" == "$DEFINITION" && "${VOIDRUNNER_FORCE_REBUILD:-0}" != 1 ]]; then
        install_rootfs "$TAG" "$DEFINITION"
        log "$TAG: up to date (definition $DEFINITION; languages: $LANGUAGES)"
        return 0
    fi
    start=$(now_ms)
    root="$CACHE/$SUITE/images/$name"
    remove_rootfs "$root"
    mkdir -p "$(dirname "$root")"
    cp -a "$CACHE/$SUITE/base" "$root"
    PACKAGES="${PACKAGES:+$PACKAGES,}tini"
    if [[ -n "$PACKAGES" ]]; then
        log "$name: apt-get install ${PACKAGES//,/ } (log: $logf)"
        # shellcheck disable=SC2086
        if ! in_chroot "$root" apt-get install -y -q --no-install-recommends ${PACKAGES//,/ } >"$logf" 2>&1; then
            tail -n 20 "$logf" >&2
            remove_rootfs "$root"
            die "$name: apt-get install failed (full log: $logf)"
        fi
    fi
    catalog files "$name" "$root"
    if [[ -n "$SETUP" ]]; then
        log "$name: $SETUP"
        if ! in_chroot "$root" HOME=/tmp "${ENVS[@]}" sh -c "$SETUP" >>"$logf" 2>&1; then
            tail -n 20 "$logf" >&2
            remove_rootfs "$root"
            die "$name: its setup command failed (full log: $logf)"
        fi
    fi
    clean_rootfs "$root"
    rm -f "$root/etc/resolv.conf"
    local f
    for f in usr/bin/env usr/bin/head bin/sh usr/bin/tini; do
        [[ -e "$root/$f" ]] || die "$name: rootfs lacks /$f"
    done
    local out
    out="$(in_chroot "$root" HOME=/tmp "${ENVS[@]}" sh -c "$CHECK" 2>&1 | head -n 1)" || true
    grep -Eq "$EXPECT" <<<"$out" || die "$name: unexpected version in rootfs: '$out' (wanted $EXPECT)"

    local old_id new_id
    old_id="$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
    local -a changes=(--change "ENV $IMAGE_PATH_ENV")
    local e
    for e in "${ENVS[@]}"; do changes+=(--change "ENV $e"); done
    tar --numeric-owner -C "$root" -c . |
        docker import "${changes[@]}" --change 'CMD ["/bin/sh"]' \
            --change "LABEL org.voidrunner.definition=$DEFINITION" \
            --change "LABEL org.voidrunner.languages=${LANGUAGES// /,}" \
            --message "voidrunner $name ($out; debootstrap $SUITE minbase)" - "$TAG" >/dev/null
    install_rootfs "$TAG" "$DEFINITION" "$root"
    new_id="$(docker image inspect --format '{{.Id}}' "$TAG")"
    if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true   # untagged now; kept if a container uses it
    fi
    docker run --rm --network none "$TAG" sh -c 'command -v env >/dev/null && command -v head >/dev/null' \
        || die "$name: smoke test of $TAG failed"
    local size
    size="$(docker image inspect --format '{{.Size}}' "$TAG")"
    log "$TAG: built in $(secs "$start") s ($out), $((size / 1024 / 1024)) MiB"
}

# The compose stand-ins' base, from Debian 12 (its PostgreSQL 15 and nginx, and crun for workers
# with the native sandbox backend). A change of the package list makes a new root filesystem.
build_compose_base() {
    local include="postgresql-15,nginx-light,ca-certificates,crun"
    local mirror="$1" tag="voidrunner/compose-base:$COMPOSE_SUITE"
    local root="$CACHE/rootfs/compose-base-$(sha256sum <<<"$include" | cut -c1-8)"
    local build_id have
    debootstrap_into "$COMPOSE_SUITE" "$root" "$include" "$mirror" "$CACHE/logs/compose-base.log"
    build_id="$(cat "$root.done")"
    have="$(docker image inspect --format '{{index .Config.Labels "org.voidrunner.rootfs"}}' "$tag" 2>/dev/null || true)"
    if [[ "$have" == "$build_id" ]]; then
        log "$tag: up to date (rootfs $build_id)"
        return 0
    fi
    clean_rootfs "$root"
    tar --numeric-owner -C "$root" -c . |
        docker import --change "ENV $IMAGE_PATH_ENV" --change 'CMD ["/bin/sh"]' \
            --change "LABEL org.voidrunner.rootfs=$build_id" \
            --message "voidrunner compose-base (debootstrap $COMPOSE_SUITE minbase)" - "$tag" >/dev/null
    log "$tag: imported"
}

main() {
    [[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot, docker)"
    command -v python3 >/dev/null || die "python3 (3.11 or later) is needed to read $CATALOG"
    local -a known=() names=()
    mapfile -t known < <(catalog images)
    local a compose=0
    for a in "$@"; do
        case "$a" in
            all) names+=("${known[@]}") ;;
            compose-base) compose=1 ;;
            -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *)
                [[ " ${known[*]} " == *" $a "* ]] || die "unknown image '$a' (the catalog has: ${known[*]} all compose-base)"
                names+=("$a") ;;
        esac
    done
    if [[ $# -eq 0 ]]; then names=("${known[@]}"); fi
    # de-duplicate, keep order
    local -a uniq=()
    local l seen=" "
    for l in "${names[@]}"; do
        [[ "$seen" == *" $l "* ]] && continue
        uniq+=("$l"); seen+="$l "
    done
    names=("${uniq[@]}")

    ensure_debootstrap
    vr_ensure_docker

    mkdir -p "$CACHE/logs"
    # One build at a time per machine (several test runs may call this at once).
    exec 9>"$CACHE/.build.lock"
    if ! flock -n 9; then
        log "another build-images.sh is running; waiting for its lock"
        flock 9
    fi

    local mirror t0
    mirror="$(detect_mirror)"
    t0=$(now_ms)
    if (( compose )); then build_compose_base "$mirror"; fi
    if (( ${#names[@]} > 0 )); then
        log "images ${names[*]} from $mirror ($SUITE, $JOBS at a time)"
        build_base "$mirror"
        local -a pids=() labels=()
        for l in "${names[@]}"; do
            while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
            ( build_image "$l" ) &
            pids+=($!); labels+=("$l")
        done
        local i fail=0
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}" || { log "${labels[$i]}: FAILED"; fail=1; }
        done
        (( fail == 0 )) || die "some images failed to build"
    fi
    log "done in $(secs "$t0") s"
    docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^voidrunner/' | sed 's/^/==>   /' >&2 || true
}

main "$@"
