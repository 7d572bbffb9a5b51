#!/usr/bin/env bash
# Runs every VoidRunner test against real services. On a fresh Debian 12 machine with Rust it
# installs and starts what the tests need (Docker engine, crun for the native sandboxes,
# nats-server >= 2.11, a throwaway PostgreSQL cluster, the language images, nats-py), then checks formatting and lints and runs
# the whole test suite. What it started, it stops on exit.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -- executions   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/services.sh
source scripts/lib/services.sh

if [[ "${VOIDRUNNER_KEEP_SERVICES:-}" != 1 ]]; then
    trap vr_stop_started EXIT
fi

vr_ensure_build_tools
vr_ensure_docker
vr_ensure_native_sandbox
vr_ensure_nats_server
vr_ensure_postgres
vr_ensure_images all compose-base
vr__log "python packages for the wire-contract, API and manifest checks (nats-py, jsonschema, schemathesis, kubernetes-validate, openapi-python-client)"
python3 -m pip install --quiet --disable-pip-version-check 'nats-py==2.16.0' 'jsonschema==4.26.0' \
    'schemathesis==4.32.5' 'hypothesis==6.135.0' 'kubernetes-validate==1.37.0' \
    'openapi-python-client==0.29.1'

vr__log "prometheus and promtool, for the metrics tests"
command -v promtool >/dev/null || vr__apt_install prometheus

vr__log "chromium, to render the API reference page offline"
command -v chromium >/dev/null || vr__apt_install chromium

vr__log "docker-compose and openssl, for the compose stack and TLS tests"
command -v docker-compose >/dev/null || vr__apt_install docker-compose
command -v openssl >/dev/null || vr__apt_install openssl
for profiles in embedded distributed observability distributed,native; do
    VOIDRUNNER_JWT_SECRET=compose-config-check docker-compose -f compose/docker-compose.yml \
        $(printf -- '--profile %s ' ${profiles//,/ }) config -q
done

# Incremental compilation only helps a build that is run again; here it would only take disk.
export CARGO_INCREMENTAL=0
vr__log "disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') free where the build goes"
vr__log "cargo fmt --check"
cargo fmt --all -- --check
vr__log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
vr__log "cargo test"
cargo test --workspace "$@"
vr__log "benchmark, quick mode (keeps it working; the numbers of record are in bench/RESULTS.md)"
bench/run.sh --quick
