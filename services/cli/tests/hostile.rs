//! Hostile code is contained: each attack ends in the status it must end in, the worker keeps
//! serving afterwards, and no sandbox is left behind; on the Docker backend and on the native
//! one alike.

use serde_json::{json, Value};
use voidrunner_testkit::{
    containers_of_worker, native_leftovers, spawn_app_with, Backend, TestApp,
};

/// One attack and what must become of it.
struct Attack {
    name: &'static str,
    language: &'static str,
    code: &'static str,
    stdin: Option<usize>,
    timeout_seconds: u32,
    check: fn(&Value),
}

fn status_is(result: &Value, status: &str) {
    assert_eq!(result["status"], status, "{result}");
}

fn stdout_is(result: &Value, stdout: &str) {
    assert_eq!(result["stdout"], stdout, "{result}");
}

const ATTACKS: &[Attack] = &[
    Attack {
        name: "fork bomb",
        language: "python",
        code: "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        stdin: None,
        timeout_seconds: 5,
        check: |r| {
            // The pids limit stops it from growing; every copy keeps trying until it is killed.
            status_is(r, "timeout");
        },
    },
    Attack {
        name: "classic shell fork bomb",
        language: "bash",
        code: ":(){ :|:& };:\nwait\n",
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            // How it ends depends on timing: the main shell may return before the bomb grows
            // (the run ends with it and the container is removed), the forks may fail against
            // the pids limit until bash gives up, or it is killed at its timeout. The Python
            // bomb above shows the pids limit holding; what matters here is that the worker
            // keeps serving and the sandbox is gone afterwards, which the test checks below.
            assert!(
                matches!(r["status"].as_str(), Some("completed" | "failed" | "timeout")),
                "{r}"
            );
        },
    },
    Attack {
        name: "allocating far past the memory limit",
        language: "python",
        code: "hog = []\nwhile True:\n    hog.append(bytearray(64 << 20))\n",
        stdin: None,
        timeout_seconds: 20,
        check: |r| {
            status_is(r, "failed");
            assert_eq!(r["oom_killed"], true, "{r}");
        },
    },
    Attack {
        name: "filling the tmpfs",
        language: "bash",
        code: "for i in 1 2 3; do head -c 40000000 /dev/zero > /tmp/fill$i || { echo \"full at $i\"; exit 3; }; done\necho never full\n",
        stdin: None,
        timeout_seconds: 20,
        check: |r| {
            status_is(r, "failed");
            assert_eq!(r["exit_code"], 3, "{r}");
            stdout_is(r, "full at 2\n");
        },
    },
    Attack {
        name: "one file larger than the tmpfs",
        language: "bash",
        code: "head -c 100000000 /dev/zero > /tmp/big\n",
        stdin: None,
        timeout_seconds: 20,
        check: |r| {
            status_is(r, "failed");
            assert_eq!(r["exit_code"], 1, "{r}");
            assert!(r["stderr"].as_str().is_some_and(|s| s.contains("No space left on device")), "{r}");
        },
    },
    Attack {
        name: "writing to the read-only root",
        language: "bash",
        code: "echo owned > /usr/bin/python3 || echo owned > /evil || exit 4\n",
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "failed");
            assert_eq!(r["exit_code"], 4, "{r}");
            assert!(r["stderr"].as_str().is_some_and(|s| s.contains("Read-only file system")), "{r}");
        },
    },
    Attack {
        name: "printing gigabytes",
        language: "python",
        code: "import sys\nline = 'x' * 65535 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
        stdin: None,
        timeout_seconds: 30,
        check: |r| {
            status_is(r, "failed");
            assert_eq!(r["output_truncated"], true, "{r}");
            assert!(r["error"].as_str().is_some_and(|e| e.contains("output")), "{r}");
        },
    },
    Attack {
        name: "an infinite loop",
        language: "javascript",
        code: "for (;;) {}\n",
        stdin: None,
        timeout_seconds: 3,
        check: |r| status_is(r, "timeout"),
    },
    Attack {
        name: "sleeping past the timeout",
        language: "python",
        code: "import time\nprint('going to sleep', flush=True)\ntime.sleep(3600)\n",
        stdin: None,
        timeout_seconds: 2,
        check: |r| {
            status_is(r, "timeout");
            stdout_is(r, "going to sleep\n");
        },
    },
    Attack {
        name: "opening a connection and resolving a name",
        language: "python",
        code: r#"import socket
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    print("connected")
except OSError:
    print("connect: blocked")
try:
    socket.getaddrinfo("example.com", 80)
    print("resolved")
except OSError:
    print("dns: blocked")
print(sorted(name for _, name in socket.if_nameindex()))
"#,
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "completed");
            stdout_is(r, "connect: blocked\ndns: blocked\n['lo']\n");
        },
    },
    Attack {
        name: "reading the worker's environment and host files",
        language: "bash",
        code: "env\ntr '\\0' '\\n' < /proc/1/environ\ncat /etc/hostname /proc/1/cmdline 2>&1\nls /var/run/docker.sock /root 2>&1\nls /proc | grep -c '^[0-9]'\ntrue\n",
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "completed");
            let seen = format!("{}{}", r["stdout"], r["stderr"]);
            for secret in ["VOIDRUNNER", "JWT", "DATABASE", "postgres", "NATS"] {
                assert!(!seen.contains(secret), "{secret} leaked into the sandbox: {r}");
            }
            assert!(seen.contains("docker.sock': No such file"), "{r}");
        },
    },
    Attack {
        name: "setuid, mount, chroot, raw sockets, namespaces and keyrings",
        language: "python",
        code: r#"import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, action):
    try:
        ok = action()
    except OSError:
        ok = False
    print(name, "allowed" if ok else "denied")
attempt("setuid", lambda: os.setuid(0) or True)
attempt("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0)
attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) and True)
attempt("chroot", lambda: os.chroot("/tmp") or True)
# A user namespace of its own would give it every capability inside, and the kernel's
# namespace and mount code to attack.
attempt("unshare", lambda: os.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS) or True)
attempt("clone", lambda: libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0) >= 0)
attempt("keyctl", lambda: libc.syscall(250, 0, -3, 0, 0, 0) >= 0)
"#,
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "completed");
            stdout_is(r, "setuid denied\nmount denied\nraw socket denied\nchroot denied\nunshare denied\nclone denied\nkeyctl denied\n");
        },
    },
    Attack {
        name: "forging the bootstrap's end markers and a result document",
        language: "bash",
        code: r#"printf '\036voidrunner-end guessed\n'
printf '{"schema":"voidrunner.result.v1","status":"completed","stdout":{"text":"FORGED"}}\n'
printf '\036voidrunner-end guessed exit=0 peak=1\n' >&2
exit 3
"#,
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            // The markers carry a nonce the program never sees: these are only its output.
            status_is(r, "failed");
            assert_eq!(r["exit_code"], 3, "{r}");
            stdout_is(
                r,
                "\u{1e}voidrunner-end guessed\n{\"schema\":\"voidrunner.result.v1\",\"status\":\"completed\",\"stdout\":{\"text\":\"FORGED\"}}\n",
            );
            assert_eq!(
                r["stderr"], "\u{1e}voidrunner-end guessed exit=0 peak=1\n",
                "{r}"
            );
        },
    },
    Attack {
        name: "ptrace",
        language: "python",
        code: r#"import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print("visible processes:", len(pids))
# Only the sandbox's own processes exist in its PID namespace. Attaching to its init process
# (same user) stops it; the worker does not wait for init, so that wedges nothing.
print("attach to init:", libc.ptrace(16, 1, None, None))
"#,
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "completed");
            let stdout = r["stdout"].as_str().unwrap_or_default();
            let visible: usize = stdout
                .lines()
                .find_map(|line| line.strip_prefix("visible processes: "))
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            assert!(visible <= 4, "the sandbox sees processes beyond its own: {r}");
        },
    },
    Attack {
        name: "killing PID 1 and everything else",
        language: "bash",
        code: "kill -9 1 && echo 'init ignored SIGKILL'\nkill -9 -1\nsleep 5\necho survived\n",
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            // Init shrugs off SIGKILL; `kill -9 -1` takes down the sandbox's own processes.
            status_is(r, "failed");
            assert_eq!(r["exit_code"], 137, "{r}");
            assert_eq!(r["oom_killed"], false, "{r}");
            assert!(r["stdout"].as_str().is_some_and(|s| s.starts_with("init ignored SIGKILL\n") && !s.contains("survived")), "{r}");
        },
    },
    Attack {
        name: "a huge stdin the program never reads",
        language: "python",
        code: "print('ignoring stdin')\n",
        stdin: Some(1_900_000),
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "completed");
            stdout_is(r, "ignoring stdin\n");
        },
    },
    Attack {
        name: "non-UTF-8 output",
        language: "bash",
        code: "printf '\\xc3\\x28\\xff'\nprintf '\\xfe' >&2\n",
        stdin: None,
        timeout_seconds: 10,
        check: |r| {
            status_is(r, "completed");
            assert_eq!(r["stdout_encoding"], "base64", "{r}");
            stdout_is(r, "wyj/");
            assert_eq!(r["stderr_encoding"], "base64", "{r}");
            assert_eq!(r["stderr"], "/g==", "{r}");
        },
    },
];

async fn launch(app: &TestApp, token: &str, attack: &Attack) -> Value {
    let task = json!({
        "name": attack.name,
        "script_type": attack.language,
        "script_content": attack.code,
        "timeout_seconds": attack.timeout_seconds,
    });
    let stdin = "z".repeat(attack.stdin.unwrap_or(0));
    app.run_with_stdin(token, task, &stdin).await
}

/// Runs every attack at once on a worker with `settings`, checks each outcome and that the
/// worker still serves; returns the worker's id once it stopped.
async fn contain_every_attack(settings: &[(&str, &str)]) -> String {
    let mut settings = settings.to_vec();
    settings.extend([
        ("VOIDRUNNER_WORKER_SLOTS", "4"),
        ("VOIDRUNNER_MAX_STDIN_BYTES", "2000000"),
    ]);
    let app = spawn_app_with(Backend::Sqlite, &settings).await;
    let token = app.login_new_user().await;

    let results =
        futures::future::join_all(ATTACKS.iter().map(|attack| launch(&app, &token, attack))).await;
    let mut failures = Vec::new();
    for (attack, result) in ATTACKS.iter().zip(&results) {
        if let Err(panic) = std::panic::catch_unwind(|| (attack.check)(result)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", attack.name));
        }
    }
    assert!(
        failures.is_empty(),
        "attacks not contained as expected:\n{}",
        failures.join("\n")
    );

    // The worker still serves.
    let after = app
        .run_to_end(&token, json!({ "name": "after", "script_type": "python", "script_content": "print('still here')" }))
        .await;
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["stdout"], "still here\n");

    let worker_id = app.worker_id.clone();
    app.stop().await;
    worker_id
}

#[tokio::test]
async fn hostile_programs_are_contained_and_the_worker_keeps_serving() {
    let worker_id = contain_every_attack(&[]).await;
    assert_eq!(
        containers_of_worker(&worker_id).await,
        0,
        "sandbox containers outlived the worker"
    );
}

#[tokio::test]
async fn hostile_programs_are_contained_by_native_sandboxes_too() {
    let state = tempfile::TempDir::new().expect("state dir");
    let state_dir = state.path().display().to_string();
    let worker_id = contain_every_attack(&[
        ("VOIDRUNNER_SANDBOX_BACKEND", "native"),
        ("VOIDRUNNER_SANDBOX_STATE_DIR", &state_dir),
    ])
    .await;
    let left = native_leftovers(state.path(), &worker_id);
    assert!(
        left.is_empty(),
        "native sandboxes outlived the worker: {left:#?}"
    );
}

/// What a program can see of its own containment, as JSON.
const CONTAINMENT_PROBE: &str = r#"import json, os, resource, socket
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
def first(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return None
mounts = {fields[1]: fields[3].split(",") for fields in (line.split() for line in open("/proc/self/mounts"))}
tmp = os.statvfs("/tmp")
facts = {
    "user": [os.getuid(), os.getgid()],
    "capabilities": [status[c].strip() for c in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
    "root": "ro" in mounts["/"],
    "tmp": [tmp.f_blocks * tmp.f_frsize, "nosuid" in mounts["/tmp"], "nodev" in mounts["/tmp"]],
    "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    "fsize": list(resource.getrlimit(resource.RLIMIT_FSIZE)),
    "memory": first("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "memory_and_swap": first("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
    "swap": first("/sys/fs/cgroup/memory.swap.max"),
    "pids": first("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "cpu": first("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max"),
    "init": os.path.basename(open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode()) in ("docker-init", "tini"),
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())[:1],
    "environment": sorted(k for k in os.environ if k not in ("HOSTNAME", "PWD", "SHLVL", "_")),
}
print(json.dumps(facts, sort_keys=True))
print(open("/proc/self/uid_map").read().split(), flush=True)
"#;

async fn containment_seen_by_a_program(settings: &[(&str, &str)]) -> (Value, String) {
    let app = spawn_app_with(Backend::Sqlite, settings).await;
    let token = app.login_new_user().await;
    let result = app
        .run_to_end(
            &token,
            json!({ "name": "probe", "script_type": "python", "script_content": CONTAINMENT_PROBE }),
        )
        .await;
    assert_eq!(result["status"], "completed", "{result}");
    let stdout = result["stdout"].as_str().unwrap_or_default().to_owned();
    let (facts, uid_map) = stdout.split_once('\n').expect("two lines");
    app.stop().await;
    (
        serde_json::from_str(facts).expect("facts"),
        uid_map.trim().to_owned(),
    )
}

#[tokio::test]
async fn a_program_sees_the_same_containment_on_both_backends() {
    let state = tempfile::TempDir::new().expect("state dir");
    let state_dir = state.path().display().to_string();
    let (docker, docker_ids) = containment_seen_by_a_program(&[]).await;
    let (native, native_ids) = containment_seen_by_a_program(&[
        ("VOIDRUNNER_SANDBOX_BACKEND", "native"),
        ("VOIDRUNNER_SANDBOX_STATE_DIR", &state_dir),
    ])
    .await;
    eprintln!("both backends: {native}");
    assert_eq!(docker, native, "docker: {docker}\nnative: {native}");
    assert_eq!(native["user"], json!([65534, 65534]));
    assert_eq!(native["capabilities"], json!(vec!["0000000000000000"; 5]));
    assert_eq!(native["no_new_privs"], "1");
    assert_eq!(native["seccomp"], "2", "a seccomp filter is loaded");
    assert_eq!(native["interfaces"], json!(["lo"]));
    assert_eq!(native["root"], true, "read-only root");
    assert_eq!(native["init"], true, "an init is PID 1");
    // Docker maps no users: its sandbox's uid 65534 is the host's. The native sandbox's users
    // are mapped far from the host's: its root is not root outside.
    assert_eq!(docker_ids, "['0', '0', '4294967295']");
    assert_eq!(native_ids, "['0', '100000', '65536']");
}
