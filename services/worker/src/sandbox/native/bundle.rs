//! The OCI runtime configuration of a native sandbox: every hardening setting in one place, as
//! `container.rs` holds them for the Docker backend, and to the same effect.

use std::path::Path;

use serde_json::{json, Value};
use voidrunner_shared::Language;

use super::super::program::{bootstrap_command, StartedFor};
use super::super::settings::{SandboxSettings, MAX_OPEN_FILES, SANDBOX_ENV, SANDBOX_UID};
use super::super::ContainerLimits;

/// Root inside a sandbox's user namespace is this uid outside, and its `nobody` this plus
/// 65534: no sandbox process is ever root, or any user of the host's, outside.
pub const HOST_ID_BASE: u32 = 100_000;
/// The init of every sandbox, in its image: reaps orphans, passes the exit on, and dies with
/// the runtime process that watches it (`-p`), taking the sandbox's PID namespace with it.
pub const INIT: &str = "/usr/bin/tini";
const CPU_PERIOD_MICROS: u64 = 100_000;

/// What one sandbox is made of besides the shared settings.
pub struct Sandbox<'a> {
    pub language: Language,
    pub started_for: StartedFor,
    pub limits: ContainerLimits,
    /// The unpacked image's root filesystem.
    pub rootfs: &'a Path,
    /// The image's own environment (`NAME=value`).
    pub image_env: &'a [String],
    /// Its cgroup, relative to the hierarchy's root.
    pub cgroup: &'a str,
    /// The compiled seccomp filter, base64.
    pub seccomp_bpf: &'a str,
}

/// The image's environment with the sandbox's own over it, variable by variable.
fn environment(image_env: &[String]) -> Vec<String> {
    let name = |var: &str| var.split('=').next().unwrap_or_default().to_owned();
    let ours: Vec<String> = SANDBOX_ENV.iter().map(|var| name(var)).collect();
    image_env
        .iter()
        .filter(|var| !ours.contains(&name(var)))
        .cloned()
        .chain(SANDBOX_ENV.iter().map(|var| (*var).to_owned()))
        .collect()
}

/// The `config.json` of a sandbox.
pub fn config(settings: &SandboxSettings, sandbox: &Sandbox<'_>) -> Value {
    let tmpfs_bytes = settings.tmpfs_bytes;
    let mut args = vec![INIT.to_owned(), "-p".into(), "SIGKILL".into(), "--".into()];
    args.extend(bootstrap_command(sandbox.language, sandbox.started_for));
    let quota =
        u64::try_from(sandbox.limits.nano_cpus).unwrap_or(0) * CPU_PERIOD_MICROS / 1_000_000_000;
    let id_map = json!([{ "containerID": 0, "hostID": HOST_ID_BASE, "size": 65536 }]);
    let namespaces: Vec<Value> = ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"]
        .iter()
        .map(|kind| json!({ "type": kind }))
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": SANDBOX_UID, "gid": SANDBOX_UID },
            "args": args,
            "env": environment(sandbox.image_env),
            "cwd": "/tmp",
            "noNewPrivileges": true,
            "capabilities": {
                "bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "soft": MAX_OPEN_FILES, "hard": MAX_OPEN_FILES },
                { "type": "RLIMIT_FSIZE", "soft": tmpfs_bytes, "hard": tmpfs_bytes }
            ]
        },
        "root": { "path": sandbox.rootfs, "readonly": true },
        "hostname": "sandbox",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["rw", "exec", "nosuid", "nodev", format!("size={tmpfs_bytes}"), "mode=1777"] }
        ],
        "annotations": { "run.oci.seccomp_bpf_data": sandbox.seccomp_bpf },
        "linux": {
            "uidMappings": id_map,
            "gidMappings": id_map,
            // No network namespace but its own: only a loopback interface.
            "namespaces": namespaces,
            "cgroupsPath": sandbox.cgroup,
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                // Memory and swap together: no swap beyond the memory limit.
                "memory": { "limit": sandbox.limits.memory_bytes, "swap": sandbox.limits.memory_bytes },
                "pids": { "limit": settings.pids },
                "cpu": { "quota": quota, "period": CPU_PERIOD_MICROS }
            },
            "maskedPaths": [
                "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_native_sandbox_is_hardened_whatever_it_runs() {
        let settings = SandboxSettings {
            worker_id: "w1".into(),
            installation: "vr".into(),
            images: HashMap::new(),
            pool_sizes: HashMap::new(),
            pids: 128,
            tmpfs_bytes: 64 << 20,
            seccomp_profile: None,
            network: None,
            pool_limits: HashMap::new(),
            native: Default::default(),
        };
        let image_env = ["GOCACHE=/cache".to_owned(), "PATH=/image/bin".to_owned()];
        let config = config(
            &settings,
            &Sandbox {
                language: "python".parse().expect("in the catalog"),
                started_for: StartedFor::Pool,
                limits: ContainerLimits {
                    memory_bytes: 256 << 20,
                    nano_cpus: 500_000_000,
                    network: false,
                },
                rootfs: Path::new("/images/python/rootfs"),
                image_env: &image_env,
                cgroup: "/voidrunner/x",
                seccomp_bpf: "AAAA",
            },
        );
        let process = &config["process"];
        assert_eq!(process["user"]["uid"], 65534);
        assert_eq!(process["noNewPrivileges"], true);
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            assert_eq!(process["capabilities"][set], json!([]), "{set}");
        }
        assert_eq!(process["args"][0], INIT);
        let env: Vec<&str> = process["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(env.contains(&"GOCACHE=/cache"), "{env:?}");
        assert!(
            !env.contains(&"PATH=/image/bin"),
            "the sandbox's PATH wins: {env:?}"
        );
        assert_eq!(config["root"]["readonly"], true);
        let linux = &config["linux"];
        let namespaces: Vec<&str> = linux["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|ns| ns["type"].as_str())
            .collect();
        for kind in ["pid", "network", "user", "mount", "ipc", "uts"] {
            assert!(namespaces.contains(&kind), "{kind}");
        }
        assert_eq!(linux["uidMappings"][0]["containerID"], 0);
        assert_ne!(
            linux["uidMappings"][0]["hostID"], 0,
            "root inside is not root outside"
        );
        let resources = &linux["resources"];
        assert_eq!(resources["memory"]["limit"], resources["memory"]["swap"]);
        assert_eq!(resources["pids"]["limit"], 128);
        assert_eq!(resources["cpu"]["quota"], 50_000);
        assert_eq!(config["annotations"]["run.oci.seccomp_bpf_data"], "AAAA");
        // No host path is mounted: every mount is a fresh kernel filesystem.
        for mount in config["mounts"].as_array().expect("mounts") {
            assert_ne!(mount["type"], "bind", "{mount}");
        }
    }
}
