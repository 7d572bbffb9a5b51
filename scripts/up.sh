#!/usr/bin/env bash
# Brings VoidRunner up in embedded mode on this machine and runs a sample task.
#
# Installs and starts what is missing (Docker engine, nats-server >= 2.11, the language images),
# builds the `voidrunner` binary, starts `voidrunner serve` in the background with its state in
# ./data, then registers a demo user, submits a Python program and prints what it printed.
# The server keeps running; `kill "$(cat data/voidrunner.pid)"` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/services.sh
source scripts/lib/services.sh

export VOIDRUNNER_DATA_DIR="${VOIDRUNNER_DATA_DIR:-$PWD/data}"
export VOIDRUNNER_API_ADDR="${VOIDRUNNER_API_ADDR:-127.0.0.1:8080}"
base="http://$VOIDRUNNER_API_ADDR"

vr_ensure_build_tools
vr_ensure_docker
vr_ensure_nats_server
vr_ensure_images all

vr__log "building voidrunner (release)"
cargo build --release --quiet --bin voidrunner
mkdir -p "$VOIDRUNNER_DATA_DIR"

pidfile="$VOIDRUNNER_DATA_DIR/voidrunner.pid"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    vr__log "voidrunner already running (pid $(cat "$pidfile")); restarting it with the new build"
    kill "$(cat "$pidfile")"
    while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.2; done
fi
vr__log "starting voidrunner serve on $base (log: $VOIDRUNNER_DATA_DIR/voidrunner.log)"
nohup setsid target/release/voidrunner serve >"$VOIDRUNNER_DATA_DIR/voidrunner.log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 1 150); do
    curl -fsS "$base/ready" >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        tail -n 20 "$VOIDRUNNER_DATA_DIR/voidrunner.log" >&2
        vr__err "voidrunner serve exited; its log is above"
        exit 1
    fi
    sleep 0.2
done
curl -fsS "$base/ready" >/dev/null

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
credentials='{"email":"demo@example.com","password":"demo-password"}'
curl -sS -o /dev/null -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' -d "$credentials"
token=$(curl -fsS -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' -d "$credentials" | json '["access_token"]')

vr__log "submitting a sample Python task"
task=$(curl -fsS -X POST "$base/api/v1/tasks" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"hello","script_type":"python","script_content":"import platform\nprint(f\"Hello from VoidRunner: Python {platform.python_version()} in a sandbox\")\nprint(sum(range(10)))"}' | json '["id"]')
execution=$(curl -fsS -X POST "$base/api/v1/tasks/$task/executions" -H "authorization: Bearer $token" | json '["id"]')
for _ in $(seq 1 300); do
    result=$(curl -fsS "$base/api/v1/executions/$execution" -H "authorization: Bearer $token")
    status=$(json '["status"]' <<<"$result")
    [[ "$status" != queued && "$status" != running ]] && break
    sleep 0.1
done
echo
echo "execution $execution: $status (exit code $(json '["exit_code"]' <<<"$result"), $(json '["duration_ms"]' <<<"$result") ms)"
echo "--- stdout"
json '["stdout"]' <<<"$result"
echo "---"
cat <<EOT

VoidRunner is running in embedded mode at $base (pid $(cat "$pidfile"), state in $VOIDRUNNER_DATA_DIR).
  token:  export TOKEN=$token
  bus:    nats --server nats://127.0.0.1:4222 --user observer --inbox-prefix _INBOX_observer \\
            --password "\$(cat $VOIDRUNNER_DATA_DIR/nats/credentials/observer)" stream ls
  stop:   kill \$(cat $pidfile)
EOT
[[ "$status" == completed ]]
