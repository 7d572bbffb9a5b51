//! The container a sandbox is: every hardening setting in one place.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use voidrunner_shared::Language;

use super::program::{bootstrap_command, StartedFor};
use super::settings::{
    SandboxSettings, EXECUTION_LABEL, INSTALLATION_LABEL, MAX_OPEN_FILES, POOL_LABEL, SANDBOX_ENV,
    SANDBOX_UID, WORKER_LABEL,
};
use super::ContainerLimits;

/// The container of a sandbox of `language` in `image`: created for `execution_id`, or for the
/// warm pool when there is none yet.
pub(super) fn config(
    settings: &SandboxSettings,
    image: &str,
    language: Language,
    limits: ContainerLimits,
    execution_id: Option<&str>,
) -> ContainerCreateBody {
    let network_mode = match (&settings.network, limits.network) {
        (Some(network), true) => network.clone(),
        _ => "none".to_owned(),
    };
    let mut security_opt = vec!["no-new-privileges".to_owned()];
    if let Some(profile) = &settings.seccomp_profile {
        security_opt.push(format!("seccomp={profile}"));
    }
    let tmpfs_bytes = i64::try_from(settings.tmpfs_bytes).unwrap_or(i64::MAX);
    let host_config = HostConfig {
        network_mode: Some(network_mode.clone()),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,exec,nosuid,nodev,size={},mode=1777", tmpfs_bytes),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(security_opt),
        memory: Some(limits.memory_bytes),
        memory_swap: Some(limits.memory_bytes),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(settings.pids),
        ulimits: Some(vec![
            ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(MAX_OPEN_FILES as i64),
                hard: Some(MAX_OPEN_FILES as i64),
            },
            ResourcesUlimits {
                name: Some("fsize".into()),
                soft: Some(tmpfs_bytes),
                hard: Some(tmpfs_bytes),
            },
        ]),
        init: Some(true),
        ..Default::default()
    };
    let mut labels = HashMap::from([
        (WORKER_LABEL.to_owned(), settings.worker_id.clone()),
        (INSTALLATION_LABEL.to_owned(), settings.installation.clone()),
    ]);
    let started_for = match execution_id {
        Some(execution_id) => {
            labels.insert(EXECUTION_LABEL.to_owned(), execution_id.to_owned());
            StartedFor::Program
        }
        None => {
            labels.insert(POOL_LABEL.to_owned(), language.to_string());
            StartedFor::Pool
        }
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(bootstrap_command(language, started_for)),
        user: Some(format!("{SANDBOX_UID}:{SANDBOX_UID}")),
        working_dir: Some("/tmp".into()),
        env: Some(SANDBOX_ENV.iter().map(|var| (*var).to_owned()).collect()),
        labels: Some(labels),
        network_disabled: Some(network_mode == "none"),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(network: Option<&str>) -> SandboxSettings {
        SandboxSettings {
            worker_id: "w1".into(),
            installation: "vr".into(),
            images: HashMap::new(),
            pool_sizes: HashMap::new(),
            pids: 128,
            tmpfs_bytes: 64 << 20,
            seccomp_profile: None,
            network: network.map(str::to_owned),
            pool_limits: HashMap::new(),
            native: Default::default(),
        }
    }

    fn limits(network: bool) -> ContainerLimits {
        ContainerLimits {
            memory_bytes: 256 << 20,
            nano_cpus: 1_000_000_000,
            network,
        }
    }

    #[test]
    fn a_sandbox_is_hardened_whatever_it_runs() {
        let config = config(
            &settings(None),
            "img",
            "python".parse::<Language>().expect("in the catalog"),
            limits(false),
            Some("e1"),
        );
        let host = config.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.memory, host.memory_swap, "no swap beyond memory");
        assert_eq!(host.pids_limit, Some(128));
        assert_eq!(host.init, Some(true));
        assert!(host.privileged.is_none() && host.binds.is_none() && host.mounts.is_none());
        assert_eq!(config.user.as_deref(), Some("65534:65534"));
        let labels = config.labels.expect("labels");
        assert_eq!(labels.get(EXECUTION_LABEL).map(String::as_str), Some("e1"));
        assert_eq!(
            labels.get(INSTALLATION_LABEL).map(String::as_str),
            Some("vr")
        );
    }

    #[test]
    fn network_needs_both_the_task_and_the_deployment() {
        let mode = |network: Option<&str>, asked: bool| {
            config(
                &settings(network),
                "img",
                "bash".parse::<Language>().expect("in the catalog"),
                limits(asked),
                None,
            )
            .host_config
            .and_then(|host| host.network_mode)
        };
        assert_eq!(mode(None, true).as_deref(), Some("none"));
        assert_eq!(mode(Some("bridge"), false).as_deref(), Some("none"));
        assert_eq!(mode(Some("bridge"), true).as_deref(), Some("bridge"));
    }
}
