//! Configuration of the worker service.

use serde::Deserialize;
use voidrunner_shared::config::{from_env, ConfigError};
use voidrunner_shared::Language;

#[derive(Debug, Clone, Deserialize)]
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
    /// `VOIDRUNNER_SANDBOX_MEMORY_MB`: memory limit of a sandbox (swap is not allowed).
    #[serde(default = "default_memory_mb")]
    pub sandbox_memory_mb: u64,
    /// `VOIDRUNNER_SANDBOX_CPUS`: CPU quota of a sandbox, in CPUs.
    #[serde(default = "default_cpus")]
    pub sandbox_cpus: f64,
    /// `VOIDRUNNER_SANDBOX_PIDS`: processes and threads a sandbox may have.
    #[serde(default = "default_pids")]
    pub sandbox_pids: i64,
    /// `VOIDRUNNER_SANDBOX_TMPFS_MB`: size of the writable `/tmp` of a sandbox.
    #[serde(default = "default_tmpfs_mb")]
    pub sandbox_tmpfs_mb: u64,
    /// `VOIDRUNNER_SANDBOX_OUTPUT_LIMIT_BYTES`: stdout and stderr kept per execution, each.
    #[serde(default = "default_output_limit_bytes")]
    pub sandbox_output_limit_bytes: usize,
}

fn default_slots() -> usize {
    4
}
fn default_python_image() -> String {
    "voidrunner/python:3.11".into()
}
fn default_javascript_image() -> String {
    "voidrunner/node:18".into()
}
fn default_bash_image() -> String {
    "voidrunner/bash:5.2".into()
}
fn default_memory_mb() -> u64 {
    256
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> i64 {
    128
}
fn default_tmpfs_mb() -> u64 {
    64
}
fn default_output_limit_bytes() -> usize {
    1024 * 1024
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
        if self.sandbox_memory_mb < 16 {
            return Err(ConfigError::invalid(
                "SANDBOX_MEMORY_MB",
                "must be at least 16",
            ));
        }
        if !(self.sandbox_cpus > 0.0 && self.sandbox_cpus <= 64.0) {
            return Err(ConfigError::invalid(
                "SANDBOX_CPUS",
                "must be above 0 and at most 64",
            ));
        }
        if self.sandbox_pids < 8 {
            return Err(ConfigError::invalid("SANDBOX_PIDS", "must be at least 8"));
        }
        if self.sandbox_tmpfs_mb < 1 {
            return Err(ConfigError::invalid(
                "SANDBOX_TMPFS_MB",
                "must be at least 1",
            ));
        }
        if self.sandbox_output_limit_bytes < 1024 {
            return Err(ConfigError::invalid(
                "SANDBOX_OUTPUT_LIMIT_BYTES",
                "must be at least 1024",
            ));
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
        }
    }
}
