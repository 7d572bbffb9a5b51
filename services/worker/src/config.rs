//! Configuration of the worker service.

use serde::{Deserialize, Serialize};
use voidrunner_shared::config::{from_env, ConfigError};
use voidrunner_shared::Language;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkerConfig {
    /// `VOIDRUNNER_WORKER_ID`: this worker's name in the fleet; default `<hostname>-<random>`.
    pub worker_id: Option<String>,
    /// `VOIDRUNNER_WORKER_SLOTS`: executions this worker runs at once.
    #[serde(default = "default_slots")]
    pub worker_slots: usize,
    /// `VOIDRUNNER_IMAGE_PYTHON`: image that runs Python programs.
    #[serde(default = "default_python_image")]
    pub image_python: String,
    /// `VOIDRUNNER_IMAGE_JAVASCRIPT`: image that runs JavaScript programs (Node.js).
    #[serde(default = "default_javascript_image")]
    pub image_javascript: String,
    /// `VOIDRUNNER_IMAGE_BASH`: image that runs Bash programs.
    #[serde(default = "default_bash_image")]
    pub image_bash: String,
    /// `VOIDRUNNER_IMAGE_GO`: image that builds and runs Go programs.
    #[serde(default = "default_go_image")]
    pub image_go: String,
    /// `VOIDRUNNER_SANDBOX_BACKEND`: what runs executions: `docker` (hardened single-use
    /// containers), or `instant` (runs nothing, for load tests of the control plane).
    #[serde(default)]
    pub sandbox_backend: voidrunner_shared::events::SandboxBackendKind,
    /// `VOIDRUNNER_SANDBOX_PIDS`: processes and threads a sandbox may have.
    #[serde(default = "default_pids")]
    pub sandbox_pids: i64,
    /// `VOIDRUNNER_SANDBOX_TMPFS_MB`: size of the writable `/tmp` of a sandbox.
    #[serde(default = "default_tmpfs_mb")]
    pub sandbox_tmpfs_mb: u64,
    /// `VOIDRUNNER_SANDBOX_SECCOMP_PROFILE`: path of a seccomp profile (JSON) stricter than
    /// Docker's default, which applies when this is unset.
    pub sandbox_seccomp_profile: Option<std::path::PathBuf>,
    /// `VOIDRUNNER_SHUTDOWN_GRACE_SECONDS`: on SIGTERM, how long running executions may take to
    /// finish before they are stopped and handed back to the fleet.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// `VOIDRUNNER_POOL_PYTHON`: started Python sandboxes kept waiting for work.
    #[serde(default = "default_pool_python")]
    pub pool_python: usize,
    /// `VOIDRUNNER_POOL_JAVASCRIPT`: started JavaScript sandboxes kept waiting for work.
    #[serde(default = "default_pool_small")]
    pub pool_javascript: usize,
    /// `VOIDRUNNER_POOL_BASH`: started Bash sandboxes kept waiting for work.
    #[serde(default = "default_pool_small")]
    pub pool_bash: usize,
    /// `VOIDRUNNER_POOL_GO`: started Go sandboxes kept waiting for work.
    #[serde(default)]
    pub pool_go: usize,
    /// `VOIDRUNNER_METRICS_ADDR`: where the worker serves `/metrics`, `/health` and `/ready`,
    /// or `off`. (`serve` shows its worker's metrics on the API's address instead.)
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
}

impl WorkerConfig {
    /// The address of the metrics endpoint, `None` when it is `off`.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.metrics_addr.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.metrics_addr.parse().map(Some).map_err(|_| {
            ConfigError::invalid(
                "METRICS_ADDR",
                format!(
                    "{:?} is not a socket address (e.g. 0.0.0.0:9464) or `off`",
                    self.metrics_addr
                ),
            )
        })
    }
}

fn default_metrics_addr() -> String {
    "127.0.0.1:9464".into()
}

fn default_slots() -> usize {
    4
}
fn default_shutdown_grace_seconds() -> u64 {
    30
}
fn default_python_image() -> String {
    Language::Python.default_image()
}
fn default_javascript_image() -> String {
    Language::Javascript.default_image()
}
fn default_bash_image() -> String {
    Language::Bash.default_image()
}
fn default_go_image() -> String {
    Language::Go.default_image()
}
fn default_pool_python() -> usize {
    2
}
fn default_pool_small() -> usize {
    1
}
fn default_pids() -> i64 {
    128
}
fn default_tmpfs_mb() -> u64 {
    64
}

impl WorkerConfig {
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config: WorkerConfig = from_env(vars)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.worker_slots) {
            return Err(ConfigError::invalid(
                "WORKER_SLOTS",
                "must be between 1 and 256",
            ));
        }
        self.metrics_addr()?;
        if self.sandbox_pids < 8 {
            return Err(ConfigError::invalid("SANDBOX_PIDS", "must be at least 8"));
        }
        if self.sandbox_tmpfs_mb < 1 {
            return Err(ConfigError::invalid(
                "SANDBOX_TMPFS_MB",
                "must be at least 1",
            ));
        }
        for (variable, size) in [
            ("POOL_PYTHON", self.pool_python),
            ("POOL_JAVASCRIPT", self.pool_javascript),
            ("POOL_BASH", self.pool_bash),
            ("POOL_GO", self.pool_go),
        ] {
            if size > 64 {
                return Err(ConfigError::invalid(variable, "must be at most 64"));
            }
        }
        if let Some(path) = &self.sandbox_seccomp_profile {
            let profile = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    "SANDBOX_SECCOMP_PROFILE",
                    format_args!("cannot read {}: {e}", path.display()),
                )
            })?;
            serde_json::from_str::<serde_json::Value>(&profile).map_err(|e| {
                ConfigError::invalid(
                    "SANDBOX_SECCOMP_PROFILE",
                    format_args!("{} is not JSON: {e}", path.display()),
                )
            })?;
        }
        if let Some(id) = &self.worker_id {
            let valid = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ConfigError::invalid(
                    "WORKER_ID",
                    "use 1-64 characters from A-Z, a-z, 0-9, '-' and '_'",
                ));
            }
        }
        Ok(())
    }

    /// The image that runs `language`.
    pub fn image(&self, language: Language) -> &str {
        match language {
            Language::Python => &self.image_python,
            Language::Javascript => &self.image_javascript,
            Language::Bash => &self.image_bash,
            Language::Go => &self.image_go,
        }
    }

    /// How many started sandboxes of `language` to keep waiting.
    pub fn pool_size(&self, language: Language) -> usize {
        match language {
            Language::Python => self.pool_python,
            Language::Javascript => self.pool_javascript,
            Language::Bash => self.pool_bash,
            Language::Go => self.pool_go,
        }
    }
}
