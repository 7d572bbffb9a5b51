#!/usr/bin/env bash
# Builds, without a registry, the images compose/docker-compose.yml names by variables:
# stand-ins for the official nats, postgres and nginx images, and the voidrunner image from a
# binary built on this machine. All on top of voidrunner/compose-base (scripts/build-images.sh
# compose-base: a debootstrapped Debian 12 with PostgreSQL 15 and nginx). Prints the variables
# to export for docker-compose.
#
#   compose/standins.sh [VOIDRUNNER_BINARY]    # default: target/debug/voidrunner
#
# Each image is rebuilt only when what it is made from changed (a content hash in its tag).
set -euo pipefail
shopt -s inherit_errexit   # a failing build inside $(build ...) stops the script
cd "$(dirname "$0")/.."
BASE=voidrunner/compose-base:bookworm
BINARY="${1:-target/debug/voidrunner}"
NATS_BIN="${VOIDRUNNER_NATS_SERVER_BIN:-$(command -v nats-server || true)}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

docker image inspect "$BASE" >/dev/null 2>&1 ||
    die "$BASE is missing: scripts/build-images.sh compose-base"
[[ -x "$BINARY" ]] || die "no voidrunner binary at $BINARY (cargo build --bin voidrunner)"
[[ -x "$NATS_BIN" ]] || die "no nats-server (set VOIDRUNNER_NATS_SERVER_BIN)"
base_id="$(docker image inspect --format '{{.Id}}' "$BASE")"

# One build at a time on this engine: concurrent legacy builds of the same layers can fail
# ("failed to register layer"), and a second caller should wait and then find the tag built.
exec 9>"${TMPDIR:-/tmp}/voidrunner-standins.lock"
flock 9

# build NAME DOCKERFILE FILE...: the image NAME:<hash of base, Dockerfile and files>.
build() {
    local name="$1" dockerfile="$2"; shift 2
    local hash tag ctx f
    hash="$( { echo "$base_id"; echo "$dockerfile"; for f in "$@"; do sha256sum < "$f"; done; } |
        sha256sum | cut -c1-12)"
    tag="$name:$hash"
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
        ctx="$(mktemp -d)"
        for f in "$@"; do cp -p "$f" "$ctx/"; done
        printf '%s\n' "$dockerfile" > "$ctx/Dockerfile"
        log "building $tag"
        docker build -q -t "$tag" "$ctx" >/dev/null || { rm -rf "$ctx"; die "building $tag failed"; }
        rm -rf "$ctx"
        docker image inspect "$tag" >/dev/null 2>&1 || die "$tag is missing right after its build"
    fi
    echo "$tag"
}

nats="$(build voidrunner/standin-nats "FROM $BASE
COPY nats-server /usr/local/bin/nats-server
ENTRYPOINT [\"nats-server\"]" "$NATS_BIN")"

postgres="$(build voidrunner/standin-postgres "FROM $BASE
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT [\"/usr/local/bin/postgres-entrypoint.sh\"]" compose/standins/postgres-entrypoint.sh)"

proxy="$(build voidrunner/standin-nginx "FROM $BASE
RUN rm -f /etc/nginx/sites-enabled/default && ln -sf /dev/stdout /var/log/nginx/access.log \\
    && ln -sf /dev/stderr /var/log/nginx/error.log
ENTRYPOINT [\"nginx\", \"-g\", \"daemon off;\"]")"

# Docker's default seccomp profile, as containers-common ships it, for workers with the native
# sandbox backend (the host has it: scripts/lib/services.sh vr_ensure_native_sandbox).
SECCOMP_PROFILE=/usr/share/containers/seccomp.json
[[ -f "$SECCOMP_PROFILE" ]] || die "no $SECCOMP_PROFILE (apt-get install golang-github-containers-common)"
voidrunner="$(build voidrunner/voidrunner "FROM $BASE
RUN useradd --system --uid 10001 --home-dir /var/lib/voidrunner --create-home voidrunner
COPY voidrunner /usr/local/bin/voidrunner
COPY nats-server /usr/local/bin/nats-server
COPY seccomp.json $SECCOMP_PROFILE
ENV VOIDRUNNER_DATA_DIR=/var/lib/voidrunner VOIDRUNNER_API_ADDR=0.0.0.0:8080 VOIDRUNNER_LOG_FORMAT=json
WORKDIR /var/lib/voidrunner
USER voidrunner
EXPOSE 8080
ENTRYPOINT [\"voidrunner\"]
CMD [\"serve\"]" "$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")" "$NATS_BIN" "$SECCOMP_PROFILE")"

cat <<VARS
VOIDRUNNER_IMAGE=$voidrunner
VOIDRUNNER_NATS_IMAGE=$nats
VOIDRUNNER_POSTGRES_IMAGE=$postgres
VOIDRUNNER_PROXY_IMAGE=$proxy
VARS
