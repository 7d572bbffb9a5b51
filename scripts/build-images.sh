#!/usr/bin/env bash
# Build VoidRunner's language images offline (no container registry):
#   debootstrap --variant=minbase bookworm ROOTFS MIRROR --include=...
#   tar -C ROOTFS -c . | docker import - voidrunner/<lang>:<version>
#
# Usage: scripts/build-images.sh [python] [node] [bash] [go] [all]
#   no argument = python node bash; "go" is only built when asked (or "all").
#   compose-base: the base of compose/standins.sh (stand-ins for nats, postgres, nginx).
#
# Environment:
#   VOIDRUNNER_DEBIAN_MIRROR  Debian mirror (default: taken from the apt configuration)
#   VOIDRUNNER_IMAGE_CACHE    cache dir (default /var/cache/voidrunner)
#   VOIDRUNNER_BUILD_JOBS     parallel debootstraps (default 2)
#   VOIDRUNNER_FORCE_REBUILD  1 = discard cached root filesystems and redo debootstrap
#
# A finished debootstrap is cached under $VOIDRUNNER_IMAGE_CACHE/rootfs/<lang>, so a
# re-run only re-imports. Progress goes to stderr, prefixed with "==> ".
set -euo pipefail

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/services.sh
source "$SCRIPTS_DIR/lib/services.sh"

CACHE="${VOIDRUNNER_IMAGE_CACHE:-/var/cache/voidrunner}"
JOBS="${VOIDRUNNER_BUILD_JOBS:-2}"
SUITE=bookworm
IMAGE_PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

log() { printf '==> %s\n' "$*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

image_tag() {
    case "$1" in
        python) echo "voidrunner/python:3.11" ;;
        node)   echo "voidrunner/node:18" ;;
        bash)   echo "voidrunner/bash:5.2" ;;
        go)     echo "voidrunner/go:1.19" ;;
        compose-base) echo "voidrunner/compose-base:bookworm" ;;
        *) return 1 ;;
    esac
}

image_include() {
    case "$1" in
        python) echo "python3" ;;
        node)   echo "nodejs" ;;
        bash)   echo "" ;;          # minbase already has bash + coreutils
        go)     echo "golang-go" ;;
        # Stand-ins for the official nats, postgres and nginx images on a machine without a
        # registry (compose/standins.sh builds them on top of this).
        compose-base) echo "postgresql-15,nginx-light,ca-certificates" ;;
    esac
}

# Extra image ENV (besides PATH). The sandbox user (65534) has HOME=/nonexistent on a
# read-only root, so Go's build cache must live on the /tmp tmpfs.
image_extra_env() {
    case "$1" in
        go) echo "GOCACHE=/tmp/.cache/go-build GOPATH=/tmp/go" ;;
        *)  echo "" ;;
    esac
}

# Command (run in a chroot of the finished rootfs) whose output must start with
# the version in the tag, so a wrong Debian release is caught at build time.
image_version_check() {
    case "$1" in
        python) echo "python3 --version" ;;   # Python 3.11.x
        node)   echo "node --version" ;;      # v18.x
        bash)   echo "bash --version" ;;      # GNU bash, version 5.2.x
        go)     echo "go version" ;;          # go version go1.19.x
        compose-base) echo "/usr/lib/postgresql/15/bin/postgres --version" ;;
    esac
}
image_version_pattern() {
    case "$1" in
        python) echo '^Python 3\.11\.' ;;
        node)   echo '^v18\.' ;;
        bash)   echo '^GNU bash, version 5\.2\.' ;;
        go)     echo '^go version go1\.19' ;;
        compose-base) echo '^postgres \(PostgreSQL\) 15\.' ;;
    esac
}

# Debian mirror for $SUITE from the apt configuration (deb822 .sources or sources.list).
detect_mirror() {
    if [[ -n "${VOIDRUNNER_DEBIAN_MIRROR:-}" ]]; then
        echo "$VOIDRUNNER_DEBIAN_MIRROR"; return
    fi
    local m=""
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        m="$(awk -v suite="$SUITE" '
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
            m="$(awk -v suite="$SUITE" '
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

# debootstrap one language into the cache (skipped when a finished rootfs exists).
# Runs in a background job; writes its own log; prints "lang seconds" on success.
build_rootfs() {
    local lang="$1" mirror="$2"
    local root="$CACHE/rootfs/$lang" done_marker="$CACHE/rootfs/$lang.done"
    local logf="$CACHE/logs/$lang.log" debs="$CACHE/debs/$lang"
    local include start
    include="$(image_include "$lang")"
    start=$(now_ms)
    if [[ "${VOIDRUNNER_FORCE_REBUILD:-0}" == 1 ]]; then
        rm -f "$done_marker"
    fi
    if [[ -f "$done_marker" && -x "$root/usr/bin/env" ]]; then
        [[ -s "$done_marker" ]] || echo "$lang-$(date -u +%Y%m%dT%H%M%SZ)" > "$done_marker"
        log "$lang: rootfs cached in $root (VOIDRUNNER_FORCE_REBUILD=1 redoes it)"
        return 0
    fi
    rm -f "$done_marker"
    remove_rootfs "$root"
    mkdir -p "$debs" "$(dirname "$logf")"
    log "$lang: debootstrap --variant=minbase $SUITE${include:+ --include=$include} (log: $logf)"
    local -a args=(--variant=minbase --cache-dir="$debs")
    [[ -n "$include" ]] && args+=(--include="$include")
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
        args+=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    if ! debootstrap "${args[@]}" "$SUITE" "$root" "$mirror" >"$logf" 2>&1; then
        tail -n 20 "$logf" >&2
        remove_rootfs "$root"
        die "$lang: debootstrap failed (full log: $logf)"
    fi
    clean_rootfs "$root"
    local f
    for f in usr/bin/env usr/bin/head bin/sh; do
        [[ -e "$root/$f" ]] || die "$lang: rootfs lacks /$f"
    done
    local out
    out="$(chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp GOCACHE=/tmp/go-build \
            sh -c "$(image_version_check "$lang")" 2>&1 | head -n 1)" || true
    if ! grep -Eq "$(image_version_pattern "$lang")" <<<"$out"; then
        die "$lang: unexpected version in rootfs: '$out' (wanted $(image_version_pattern "$lang"))"
    fi
    # The marker's content names this rootfs build; the image carries it as a label,
    # so a re-run skips the import when the image already holds this very rootfs.
    echo "$lang-$(date -u +%Y%m%dT%H%M%SZ)" > "$done_marker"
    log "$lang: rootfs ready ($out), $(du -sh --apparent-size "$root" | cut -f1), $(secs "$start") s"
}

import_image() {
    local lang="$1" tag root start build_id old_id have_id new_id
    tag="$(image_tag "$lang")"
    root="$CACHE/rootfs/$lang"
    build_id="$(cat "$CACHE/rootfs/$lang.done")"
    old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    have_id="$(docker image inspect --format '{{index .Config.Labels "org.voidrunner.rootfs"}}' "$tag" 2>/dev/null || true)"
    if [[ -n "$old_id" && -n "$build_id" && "$have_id" == "$build_id" ]]; then
        log "$tag: up to date (rootfs $build_id)"
        return 0
    fi
    start=$(now_ms)
    local -a changes=(--change "ENV $IMAGE_PATH_ENV")
    local e
    for e in $(image_extra_env "$lang"); do changes+=(--change "ENV $e"); done
    tar --numeric-owner -C "$root" -c . |
        docker import "${changes[@]}" --change 'CMD ["/bin/sh"]' \
            --change "LABEL org.voidrunner.rootfs=$build_id" \
            --message "voidrunner $lang (debootstrap $SUITE minbase)" - "$tag" >/dev/null
    new_id="$(docker image inspect --format '{{.Id}}' "$tag")"
    if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true   # untagged now; kept if a container uses it
    fi
    # Smoke test: the things every runner relies on.
    docker run --rm --network none "$tag" sh -c 'command -v env >/dev/null && command -v head >/dev/null' \
        || die "$lang: smoke test of $tag failed"
    local size
    size="$(docker image inspect --format '{{.Size}}' "$tag")"
    log "$tag: imported in $(secs "$start") s, size $((size / 1024 / 1024)) MiB"
}

main() {
    [[ $EUID -eq 0 ]] || die "must run as root (debootstrap, docker)"
    local -a langs=()
    local a
    if [[ $# -eq 0 ]]; then
        langs=(python node bash)
    fi
    for a in "$@"; do
        case "$a" in
            all) langs+=(python node bash go) ;;
            python|node|bash|go|compose-base) langs+=("$a") ;;
            -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown image '$a' (expected: python node bash go all)" ;;
        esac
    done
    # de-duplicate, keep order
    local -a uniq=()
    local l seen=" "
    for l in "${langs[@]}"; do
        [[ "$seen" == *" $l "* ]] && continue
        uniq+=("$l"); seen+="$l "
    done
    langs=("${uniq[@]}")

    ensure_debootstrap
    vr_ensure_docker

    mkdir -p "$CACHE"/{rootfs,debs,logs}
    # One build at a time per machine (several test runs may call this at once).
    exec 9>"$CACHE/.build.lock"
    if ! flock -n 9; then
        log "another build-images.sh is running; waiting for its lock"
        flock 9
    fi

    local mirror t0
    mirror="$(detect_mirror)"
    log "building ${langs[*]} from $mirror ($JOBS parallel)"
    t0=$(now_ms)

    # debootstrap in parallel (bounded by $JOBS), each into its own dir and log.
    local -a pids=() names=()
    for l in "${langs[@]}"; do
        while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
        ( build_rootfs "$l" "$mirror" ) &
        pids+=($!); names+=("$l")
    done
    local i fail=0
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { log "${names[$i]}: FAILED"; fail=1; }
    done
    (( fail == 0 )) || die "some root filesystems failed to build"

    for l in "${langs[@]}"; do
        import_image "$l"
    done
    log "done: ${langs[*]} in $(secs "$t0") s"
    docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^voidrunner/' | sed 's/^/==>   /' >&2 || true
}

main "$@"
