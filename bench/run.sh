#!/usr/bin/env bash
# The benchmark, one command: brings up what it needs (Docker, crun and the language images for
# the sandbox rows, nats-server, PostgreSQL, Celery and Redis for the anchor), builds the
# `voidrunner` binary and the benchmark with the same profile, and runs it.
#
#   bench/run.sh [--quick] [--only sandbox|languages|control-plane] [--database postgres|sqlite] ...
#
# --quick builds the debug profile (what the test command has built already) and runs a few of
# everything; otherwise release. VOIDRUNNER_BENCH_PROFILE overrides the profile (e.g. profiling:
# release with symbols, for perf).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh

profile="${VOIDRUNNER_BENCH_PROFILE:-release}"
only=""
for arg in "$@"; do
    [[ "$arg" == "--quick" ]] && profile="${VOIDRUNNER_BENCH_PROFILE:-dev}"
done
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [[ "${args[$i]}" == "--only" ]] && only="${args[$((i + 1))]:-}"
done

vr_ensure_nats_server
if [[ -z "$only" || "$only" == control-plane ]]; then
    vr_ensure_postgres
    vr_ensure_celery
fi
if [[ -z "$only" || "$only" == sandbox ]]; then
    vr_ensure_native_sandbox    # the sandbox rows compare the docker and native backends
fi
if [[ "$only" == sandbox ]]; then
    vr_ensure_docker
    vr_ensure_images python
elif [[ "$only" != control-plane ]]; then
    vr_ensure_docker
    vr_ensure_images all    # the languages rows run every language of the catalog
fi

dir="$profile"
[[ "$profile" == "dev" ]] && dir=debug
cargo build --profile "$profile" -p voidrunner -p voidrunner-bench
exec "target/$dir/voidrunner-bench" "$@"
