//! The native backend's seccomp filter: a profile in Docker's format (Docker's default profile as
//! containers-common ships it, or `VOIDRUNNER_SANDBOX_SECCOMP_PROFILE`), resolved for a process
//! with no capabilities on this machine's architecture and compiled to BPF once, by libseccomp,
//! when the worker starts. Each sandbox then loads the compiled filter (crun's
//! `run.oci.seccomp_bpf_data`), instead of compiling the profile again at every start (about
//! 20 ms each here).

use std::io::{Read, Seek};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

/// Where Debian's and Fedora's containers-common put their copy of Docker's default profile.
pub const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";

/// System calls a sandbox never makes, whatever the profile allows: those Docker's default
/// profile allows only to a process with a capability (a sandbox has none), and the key
/// management calls it refuses to all. containers-common's copy of the profile allows several
/// of them to every process (it lets containers nest); a sandbox would then create user
/// namespaces of its own, and the capabilities that come with them. They fail with EPERM, as
/// under Docker.
const REFUSED: &[&str] = &[
    // namespaces and mounts (CAP_SYS_ADMIN)
    "unshare",
    "setns",
    "mount",
    "mount_setattr",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "chroot",
    // the kernel's keyrings (refused to all by Docker)
    "keyctl",
    "add_key",
    "request_key",
    // kernel facilities behind other capabilities
    "syslog",
    "reboot",
    "bpf",
    "perf_event_open",
    "fanotify_init",
    "lookup_dcookie",
    "name_to_handle_at",
    "open_by_handle_at",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "iopl",
    "ioperm",
    "settimeofday",
    "stime",
    "clock_settime",
    "vhangup",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "set_mempolicy_home_node",
    "userfaultfd",
    "nfsservctl",
];
/// The flags of `clone` that create namespaces (Docker's mask): without CAP_SYS_ADMIN, `clone`
/// may not use them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp profile is not a profile in Docker's format: {0}")]
    Format(#[from] serde_json::Error),
    #[error("the seccomp profile names an unknown {what} `{value}`")]
    Unknown { what: &'static str, value: String },
    #[error("libseccomp refused the profile: {0}")]
    Libseccomp(#[from] libseccomp::error::SeccompError),
    #[error("exporting the compiled filter: {0}")]
    Export(#[from] std::io::Error),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<i32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: String,
    errno_ret: Option<i32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Docker's names for this machine's architecture.
fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// The running kernel's version as (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Rule {
    /// Whether the rule applies to a process without capabilities on `arch` under `kernel`.
    fn applies(&self, arch: &str, kernel: (u32, u32)) -> bool {
        let included = self.includes.caps.is_empty()
            && (self.includes.arches.is_empty() || self.includes.arches.iter().any(|a| a == arch))
            && self.includes.min_kernel.as_deref().is_none_or(|min| {
                let mut parts = min.split('.').filter_map(|part| part.parse().ok());
                (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) <= kernel
            });
        // Exclusions by capability never match: the sandbox has none.
        let excluded = self.excludes.arches.iter().any(|a| a == arch);
        included && !excluded
    }
}

fn action(name: &str, errno: Option<i32>) -> Result<ScmpAction, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno.unwrap_or(libc::EPERM)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        other => {
            return Err(SeccompError::Unknown {
                what: "action",
                value: other.to_owned(),
            })
        }
    })
}

fn compare(arg: &Arg) -> Result<ScmpArgCompare, SeccompError> {
    let (op, datum) = match arg.op.as_str() {
        "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, arg.value),
        "SCMP_CMP_LT" => (ScmpCompareOp::Less, arg.value),
        "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, arg.value),
        "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, arg.value),
        "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, arg.value),
        "SCMP_CMP_GT" => (ScmpCompareOp::Greater, arg.value),
        // Docker's format: `value` is the mask, `valueTwo` what the masked argument must equal.
        "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(arg.value), arg.value_two),
        other => {
            return Err(SeccompError::Unknown {
                what: "comparison",
                value: other.to_owned(),
            })
        }
    };
    Ok(ScmpArgCompare::new(arg.index, op, datum))
}

/// Whether the sandbox's own rules, not the profile's, decide about `name`.
fn is_restricted(name: &str) -> bool {
    REFUSED.contains(&name) || name == "clone" || name == "clone3"
}

/// The rules no profile overrides: the `REFUSED` calls fail with EPERM, `clone` may not create
/// namespaces, and `clone3` (whose flags a filter cannot read) says it does not exist, so that
/// the C library falls back to `clone`.
fn refuse_what_needs_a_capability(
    filter: &mut ScmpFilterContext,
    default: ScmpAction,
) -> Result<(), SeccompError> {
    // libseccomp takes no rule that does what the default does.
    let mut refuse = |action: ScmpAction, syscall: ScmpSyscall| match action == default {
        true => Ok(()),
        false => filter.add_rule(action, syscall).map(|_| ()),
    };
    for name in REFUSED {
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            refuse(ScmpAction::Errno(libc::EPERM), syscall)?;
        }
    }
    if let Ok(clone3) = ScmpSyscall::from_name("clone3") {
        refuse(ScmpAction::Errno(libc::ENOSYS), clone3)?;
    }
    filter.add_rule_conditional(
        ScmpAction::Allow,
        ScmpSyscall::from_name("clone")?,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::MaskedEqual(CLONE_NAMESPACE_FLAGS),
            0,
        )],
    )?;
    Ok(())
}

/// Compiles `profile` (JSON in Docker's format) into the BPF program a sandbox loads, with the
/// number of syscalls it names that this libseccomp does not know (skipped, as Docker does).
pub fn compile(profile: &str) -> Result<(Vec<u8>, usize), SeccompError> {
    let profile: Profile = serde_json::from_str(profile)?;
    let default = action(&profile.default_action, profile.default_errno_ret)?;
    let mut filter = ScmpFilterContext::new(default)?;
    // The native architecture is in every filter; the profile's map adds its companions (x86
    // and x32 beside x86-64), whose syscalls then meet the same rules.
    let native = ScmpArch::native();
    let native_name = format!("{native:?}");
    for map in &profile.arch_map {
        let architecture: ScmpArch =
            map.architecture
                .parse()
                .map_err(|_| SeccompError::Unknown {
                    what: "architecture",
                    value: map.architecture.clone(),
                })?;
        if architecture != native {
            continue;
        }
        for sub in &map.sub_architectures {
            if let Ok(sub) = sub.parse::<ScmpArch>() {
                filter.add_arch(sub)?;
            }
        }
    }
    tracing::debug!(arch = %native_name, "seccomp filter architectures");

    let arch = docker_arch();
    let kernel = kernel_version();
    let mut unknown = 0;
    for rule in profile
        .syscalls
        .iter()
        .filter(|rule| rule.applies(arch, kernel))
    {
        let rule_action = action(&rule.action, rule.errno_ret)?;
        if rule_action == default {
            continue;
        }
        let conditions = rule
            .args
            .iter()
            .flatten()
            .map(compare)
            .collect::<Result<Vec<_>, _>>()?;
        for name in rule.names.iter().filter(|name| !is_restricted(name)) {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                unknown += 1;
                continue;
            };
            if conditions.is_empty() {
                filter.add_rule(rule_action, syscall)?;
            } else {
                filter.add_rule_conditional(rule_action, syscall, &conditions)?;
            }
        }
    }
    refuse_what_needs_a_capability(&mut filter, default)?;
    let mut exported = tempfile::tempfile()?;
    filter.export_bpf(&exported)?;
    exported.rewind()?;
    let mut program = Vec::new();
    exported.read_to_end(&mut program)?;
    Ok((program, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"names": ["read", "write", "exit_group", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
        ]
    }"#;

    #[test]
    fn a_docker_profile_compiles_to_a_bpf_program() {
        let (program, unknown) = compile(PROFILE).expect("compiles");
        assert_eq!(unknown, 1, "no_such_syscall is skipped");
        // struct sock_filter is 8 bytes; a program allowing a handful of calls is short but
        // not empty.
        assert!(
            !program.is_empty() && program.len() % 8 == 0,
            "{}",
            program.len()
        );
    }

    #[test]
    fn rules_for_capabilities_the_sandbox_lacks_do_not_apply() {
        let profile: Profile = serde_json::from_str(PROFILE).expect("profile");
        let applies: Vec<&str> = profile
            .syscalls
            .iter()
            .filter(|rule| rule.applies("amd64", (6, 1)))
            .map(|rule| rule.names[0].as_str())
            .collect();
        assert_eq!(applies, ["read", "personality", "clone"]);
    }

    #[test]
    fn no_profile_gives_a_sandbox_namespaces_or_mounts() {
        let permissive = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["read", "unshare", "setns", "mount", "clone", "clone3", "keyctl"],
                 "action": "SCMP_ACT_ALLOW"}
            ]
        }"#;
        assert!(compile(permissive).is_ok());
        for name in [
            "unshare", "setns", "mount", "clone", "clone3", "keyctl", "chroot",
        ] {
            assert!(is_restricted(name), "{name}");
        }
        assert!(!is_restricted("read"));
    }

    #[test]
    fn a_profile_in_another_format_is_refused() {
        assert!(matches!(
            compile(r#"{"syscalls": 3}"#),
            Err(SeccompError::Format(_))
        ));
        assert!(matches!(
            compile(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#),
            Err(SeccompError::Unknown { .. })
        ));
    }
}
