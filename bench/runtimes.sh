#!/usr/bin/env bash
# The candidates for the native sandbox backend, measured on this machine: how long each takes
# to start `python3 -c pass` (and `/bin/true`) in a sandbox like VoidRunner's (user, PID,
# network, mount, IPC and UTS namespaces; read-only root; tmpfs /tmp; no capabilities; seccomp
# where the mechanism has it; memory, pids and CPU cgroups where it has them), sequentially,
# on the unpacked python image. Prints p50 and p90 in ms.
#
#   bench/runtimes.sh [RUNS]      (default 40)
#
# Needs root, crun, runc, bwrap and docker (vr_ensure_native_sandbox, vr_ensure_docker, apt-get
# install bubblewrap) and the images (scripts/build-images.sh python).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-40}"
ROOTFS="$(readlink -f "${VOIDRUNNER_SANDBOX_ROOTFS_DIR:-/var/lib/voidrunner/rootfs}/voidrunner/python:3.13/current")/rootfs"
[[ -x "$ROOTFS/usr/bin/python3" ]] || { echo "no unpacked python image at $ROOTFS (scripts/build-images.sh python)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# bundle DIR SECCOMP(0|1) CGROUPS(0|1) ARGS...: an OCI bundle as the native backend makes one.
bundle() {
    local dir="$1" seccomp="$2" cgroups="$3"; shift 3
    mkdir -p "$dir"
    python3 - "$ROOTFS" "$seccomp" "$cgroups" "$@" > "$dir/config.json" <<'EOF'
import json, sys
rootfs, seccomp, cgroups, args = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4:]
ids = [{"containerID": 0, "hostID": 100000, "size": 65536}]
config = {
    "ociVersion": "1.0.2",
    "process": {"terminal": False, "user": {"uid": 65534, "gid": 65534}, "args": args,
                "env": ["PATH=/usr/bin:/bin", "HOME=/tmp"], "cwd": "/tmp", "noNewPrivileges": True,
                "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 256}]},
    "root": {"path": rootfs, "readonly": True},
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=64m"]},
    ],
    "linux": {"uidMappings": ids, "gidMappings": ids,
              "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user")]},
}
if cgroups:
    config["linux"]["cgroupsPath"] = "/voidrunner-bench/c"
    config["linux"]["resources"] = {"memory": {"limit": 268435456, "swap": 268435456},
                                    "pids": {"limit": 128}, "cpu": {"quota": 100000, "period": 100000}}
if seccomp:
    profile = json.load(open("/usr/share/containers/seccomp.json"))
    rules = []
    for rule in profile["syscalls"]:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("caps") or (inc.get("arches") and "amd64" not in inc["arches"]) or "amd64" in (exc.get("arches") or []):
            continue
        entry = {"names": rule["names"], "action": rule["action"]}
        if rule.get("args"):
            entry["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op")} for a in rule["args"]]
        if "errnoRet" in rule:
            entry["errnoRet"] = rule["errnoRet"]
        rules.append(entry)
    config["linux"]["seccomp"] = {"defaultAction": profile["defaultAction"], "defaultErrnoRet": 1,
                                  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                                  "syscalls": rules}
print(json.dumps(config))
EOF
}

# measure NAME COMMAND...: RUNS sequential runs; prints p50 and p90.
measure() {
    local name="$1"; shift
    local i start end
    local -a times=()
    for ((i = 0; i < RUNS; i++)); do
        start=$(date +%s%N)
        "$@" "$i" </dev/null >/dev/null 2>"$work/err" || { echo "$name failed: $(cat "$work/err")" >&2; return 1; }
        end=$(date +%s%N)
        times+=($(( (end - start) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v name="$name" '
        { t[NR] = $1 }
        END { printf "| %s | %.1f | %.1f |\n", name, t[int(NR * 0.5) + 1] / 1000, t[int(NR * 0.9)] / 1000 }'
}

oci() { local runtime="$1" dir="$2"; shift 2; "$runtime" --root "$work/state-$runtime" run --bundle "$dir" "bench-$1"; }
bwrap_run() {
    shift 0
    bwrap --unshare-all --die-with-parent --new-session --uid 65534 --gid 65534 --cap-drop ALL \
        --ro-bind "$ROOTFS" / --proc /proc --dev /dev --tmpfs /tmp --chdir /tmp \
        --clearenv --setenv PATH /usr/bin:/bin "${@:1:$#-1}"
}
docker_run() {
    docker run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL \
        --security-opt no-new-privileges --memory 256m --memory-swap 256m --pids-limit 128 \
        --cpus 1 --user 65534:65534 --init voidrunner/python:3.13 "${@:1:$#-1}"
}

echo "| candidate, \`python3 -c pass\` | p50 ms | p90 ms |"
echo "|---|---:|---:|"
bundle "$work/crun-full" 1 1 /usr/bin/python3 -c pass
bundle "$work/crun-bpf" 0 1 /usr/bin/python3 -c pass
bundle "$work/crun-nocg" 0 0 /usr/bin/python3 -c pass
measure "python3 outside any sandbox (chroot)" chroot "$ROOTFS" /usr/bin/python3 -c pass
measure "crun, cgroups, seccomp profile compiled at each start" oci crun "$work/crun-full"
measure "crun, cgroups, no seccomp (a precompiled filter loads in microseconds)" oci crun "$work/crun-bpf"
measure "crun, no cgroups, no seccomp" oci crun "$work/crun-nocg"
measure "runc, cgroups, seccomp" oci runc "$work/crun-full"
measure "bubblewrap, no cgroups, no seccomp" bwrap_run /usr/bin/python3 -c pass
measure "docker run --rm (hardened)" docker_run python3 -c pass
echo
echo "| candidate, \`/bin/true\` | p50 ms | p90 ms |"
echo "|---|---:|---:|"
bundle "$work/true-full" 1 1 /bin/true
bundle "$work/true-bpf" 0 1 /bin/true
measure "crun, cgroups, seccomp profile compiled at each start" oci crun "$work/true-full"
measure "crun, cgroups, no seccomp" oci crun "$work/true-bpf"
measure "runc, cgroups, seccomp" oci runc "$work/true-full"
measure "bubblewrap, no cgroups, no seccomp" bwrap_run /bin/true
