//! Configuration of the worker service.

use std::collections::HashMap;

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
    /// `VOIDRUNNER_WORKER_LANGUAGES`: the languages this worker serves, separated by commas (a
    /// pool of specialised workers, say `java,c,cpp`); by default every language of the
    /// catalog whose image it has. It pulls executions of these languages only.
    #[serde(default)]
    pub worker_languages: String,
    /// `VOIDRUNNER_IMAGES`: images that run a language instead of the catalog's, as
    /// `language=image` pairs separated by commas (e.g. `python=registry.local/python:3.13`).
    #[serde(default)]
    pub images: String,
    /// `VOIDRUNNER_SANDBOX_BACKEND`: what runs executions: `docker` (hardened single-use
    /// containers on the Docker engine), `native` (the same containment without a daemon,
    /// through crun), or `instant` (runs nothing, for load tests of the control plane).
    #[serde(default)]
    pub sandbox_backend: voidrunner_shared::events::SandboxBackendKind,
    /// `VOIDRUNNER_SANDBOX_PIDS`: processes and threads a sandbox may have.
    #[serde(default = "default_pids")]
    pub sandbox_pids: i64,
    /// `VOIDRUNNER_SANDBOX_TMPFS_MB`: size of the writable `/tmp` of a sandbox.
    #[serde(default = "default_tmpfs_mb")]
    pub sandbox_tmpfs_mb: u64,
    /// `VOIDRUNNER_SANDBOX_SECCOMP_PROFILE`: path of a seccomp profile (JSON, Docker's format)
    /// stricter than Docker's default, which applies when this is unset (the native backend
    /// reads that default from containers-common's /usr/share/containers/seccomp.json).
    pub sandbox_seccomp_profile: Option<std::path::PathBuf>,
    /// `VOIDRUNNER_SANDBOX_RUNTIME`: the OCI runtime of the native backend.
    #[serde(default = "default_runtime")]
    pub sandbox_runtime: std::path::PathBuf,
    /// `VOIDRUNNER_SANDBOX_ROOTFS_DIR`: where the native backend finds the language images,
    /// unpacked (`scripts/build-images.sh` puts them there).
    #[serde(default = "default_rootfs_dir")]
    pub sandbox_rootfs_dir: std::path::PathBuf,
    /// `VOIDRUNNER_SANDBOX_STATE_DIR`: the native backend's runtime state and sandbox bundles
    /// (on a tmpfs, such as /run).
    #[serde(default = "default_state_dir")]
    pub sandbox_state_dir: std::path::PathBuf,
    /// `VOIDRUNNER_SHUTDOWN_GRACE_SECONDS`: on SIGTERM, how long running executions may take to
    /// finish before they are stopped and handed back to the fleet.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// `VOIDRUNNER_POOL_SIZES`: started sandboxes kept waiting for work, per language, as
    /// `language=count` pairs; they change the defaults (python=2, javascript=1, bash=1, none
    /// for the others) language by language.
    #[serde(default)]
    pub pool_sizes: String,
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

fn default_runtime() -> std::path::PathBuf {
    voidrunner_worker_defaults().runtime
}
fn default_rootfs_dir() -> std::path::PathBuf {
    voidrunner_worker_defaults().rootfs_dir
}
fn default_state_dir() -> std::path::PathBuf {
    voidrunner_worker_defaults().state_dir
}
fn voidrunner_worker_defaults() -> crate::sandbox::NativeSettings {
    crate::sandbox::NativeSettings::default()
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
        self.image_overrides()?;
        self.chosen_languages()?;
        for (language, size) in self.pool_size_overrides()? {
            if size > 64 {
                return Err(ConfigError::invalid(
                    "POOL_SIZES",
                    format_args!("{language}={size}: a pool holds at most 64 sandboxes"),
                ));
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
    pub fn image(&self, language: Language) -> String {
        self.image_overrides()
            .ok()
            .and_then(|mut images| images.remove(&language))
            .unwrap_or_else(|| language.default_image())
    }

    /// How many started sandboxes of `language` to keep waiting.
    pub fn pool_size(&self, language: Language) -> usize {
        let default = match language.as_str() {
            "python" => 2,
            "javascript" | "bash" => 1,
            _ => 0,
        };
        self.pool_size_overrides()
            .ok()
            .and_then(|sizes| sizes.get(&language).copied())
            .unwrap_or(default)
    }

    /// The languages `VOIDRUNNER_WORKER_LANGUAGES` names, or `None` when it names none (all).
    pub fn chosen_languages(&self) -> Result<Option<Vec<Language>>, ConfigError> {
        let names: Vec<&str> = self
            .worker_languages
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        let mut languages = Vec::new();
        for name in names {
            let language: Language =
                name.parse()
                    .map_err(|e: voidrunner_shared::language::UnknownLanguage| {
                        ConfigError::invalid("WORKER_LANGUAGES", e)
                    })?;
            if !languages.contains(&language) {
                languages.push(language);
            }
        }
        Ok(Some(languages))
    }

    fn image_overrides(&self) -> Result<HashMap<Language, String>, ConfigError> {
        per_language("IMAGES", &self.images, |image| {
            (!image.is_empty() && !image.contains(char::is_whitespace))
                .then(|| image.to_owned())
                .ok_or("an image reference")
        })
    }

    fn pool_size_overrides(&self) -> Result<HashMap<Language, usize>, ConfigError> {
        per_language("POOL_SIZES", &self.pool_sizes, |count| {
            count.parse().map_err(|_| "a number of sandboxes")
        })
    }
}

/// Reads `language=value` pairs separated by commas, each language by a name the catalog knows.
fn per_language<T>(
    variable: &str,
    text: &str,
    parse: impl Fn(&str) -> Result<T, &'static str>,
) -> Result<HashMap<Language, T>, ConfigError> {
    let mut values = HashMap::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(ConfigError::invalid(
                variable,
                format_args!("{pair:?} is not `language=value`"),
            ));
        };
        let language: Language =
            name.trim()
                .parse()
                .map_err(|e: voidrunner_shared::language::UnknownLanguage| {
                    ConfigError::invalid(variable, e)
                })?;
        let value = parse(value.trim()).map_err(|wanted| {
            ConfigError::invalid(
                variable,
                format_args!("{pair:?}: expected {wanted} after `=`"),
            )
        })?;
        values.insert(language, value);
    }
    Ok(values)
}
