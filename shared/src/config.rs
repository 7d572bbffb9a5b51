//! Configuration read from `VOIDRUNNER_*` environment variables.
//!
//! Each service owns a typed struct; they are all read from one explicit map of variables (not
//! from deep inside the code), validated at start-up, and their errors name the variable to fix.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

/// The prefix of every configuration variable.
pub const ENV_PREFIX: &str = "VOIDRUNNER_";

/// A configuration error that names the variable and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `variable` is the name without the prefix.
    #[error("configuration: {ENV_PREFIX}{variable} is required but not set")]
    Missing { variable: String },
    #[error("configuration: {ENV_PREFIX}{variable}: {problem}")]
    Invalid { variable: String, problem: String },
    /// A value that does not parse as its variable's type; the message names the variable.
    #[error("configuration: {0} (variables start with {ENV_PREFIX}; see the configuration table in the README)")]
    Unparsable(String),
}

impl ConfigError {
    pub fn invalid(variable: &str, problem: impl std::fmt::Display) -> Self {
        ConfigError::Invalid {
            variable: variable.to_owned(),
            problem: problem.to_string(),
        }
    }

    pub fn missing(variable: &str) -> Self {
        ConfigError::Missing {
            variable: variable.to_owned(),
        }
    }

    /// The variable to fix, with its prefix, when the error names one.
    pub fn variable(&self) -> Option<String> {
        match self {
            ConfigError::Missing { variable } | ConfigError::Invalid { variable, .. } => {
                Some(format!("{ENV_PREFIX}{variable}"))
            }
            ConfigError::Unparsable(_) => None,
        }
    }
}

/// Reads `T` from the `VOIDRUNNER_*` entries of `vars` (field `foo_bar` is `VOIDRUNNER_FOO_BAR`).
pub fn from_env<T: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    envy::prefixed(ENV_PREFIX)
        .from_iter::<_, T>(vars.clone())
        .map_err(|error| match error {
            envy::Error::MissingValue(field) => ConfigError::missing(&field.to_ascii_uppercase()),
            envy::Error::Custom(message) => unparsable::<T>(&vars, message),
        })
}

/// envy says `<problem> while parsing value '<value>' provided by <FIELD>` for most values: the
/// error names the variable, as every other configuration error does. For the rest (an enum's
/// unknown variant), the variable is the one without which the error goes away.
fn unparsable<T: DeserializeOwned>(vars: &[(String, String)], message: String) -> ConfigError {
    if let Some((variable, problem)) = message
        .strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.split_once(": "))
    {
        return ConfigError::invalid(variable, problem);
    }
    let Some((problem, field)) = message.rsplit_once(" provided by ") else {
        let culprit = vars.iter().position(|(key, _)| {
            key.starts_with(ENV_PREFIX) && {
                let without = vars.iter().filter(|(other, _)| other != key).cloned();
                let outcome = envy::prefixed(ENV_PREFIX).from_iter::<_, T>(without);
                !matches!(outcome, Err(envy::Error::Custom(other)) if other == message)
            }
        });
        return match culprit {
            Some(index) => {
                let (key, value) = &vars[index];
                ConfigError::invalid(
                    &key[ENV_PREFIX.len()..],
                    format_args!("{message} (got '{value}')"),
                )
            }
            None => ConfigError::Unparsable(message),
        };
    };
    let (problem, value) = match problem.rsplit_once(" while parsing value ") {
        Some((problem, value)) => (problem, Some(value)),
        None => (problem, None),
    };
    let variable = field.trim().to_ascii_uppercase();
    let problem = problem
        .strip_prefix(&format!("{ENV_PREFIX}{variable}: "))
        .unwrap_or(problem);
    match value {
        Some(value) => ConfigError::invalid(&variable, format_args!("{problem} (got {value})")),
        None => ConfigError::invalid(&variable, problem),
    }
}

/// Serialises a secret as `<redacted>` (for `voidrunner config check`), `null` when unset.
pub fn redacted<S: Serializer, T>(value: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str("<redacted>"),
        None => serializer.serialize_none(),
    }
}

/// How services write their logs (`VOIDRUNNER_LOG_FORMAT`), read before anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LogConfig {
    /// `VOIDRUNNER_LOG_FORMAT`: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
}

impl LogConfig {
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        from_env(vars)
    }
}

/// How a service reaches NATS and which installation (subject prefix) it belongs to.
#[derive(Clone, Deserialize, Serialize)]
pub struct NatsConfig {
    /// `VOIDRUNNER_NATS_URL`: server URL(s), comma separated. Unset in `serve`: start a local one.
    pub nats_url: Option<String>,
    /// `VOIDRUNNER_NATS_PREFIX`: first token of every subject, part of every stream name.
    #[serde(default = "default_prefix")]
    pub nats_prefix: String,
    /// `VOIDRUNNER_NATS_REPLICAS`: stream replicas (3 on a 3-node cluster).
    #[serde(default = "default_replicas")]
    pub nats_replicas: usize,
    /// `VOIDRUNNER_NATS_ACK_WAIT_SECONDS`: how long a worker may go silent before redelivery.
    #[serde(default = "default_ack_wait_seconds")]
    pub nats_ack_wait_seconds: u64,
    /// `VOIDRUNNER_NATS_MAX_DELIVER`: deliveries of a dispatch before it goes to the DLQ.
    #[serde(default = "default_max_deliver")]
    pub nats_max_deliver: u32,
    /// `VOIDRUNNER_NATS_MAX_ACK_PENDING`: executions in flight per lane across the fleet.
    #[serde(default = "default_max_ack_pending")]
    pub nats_max_ack_pending: u32,
    /// `VOIDRUNNER_NATS_PROVISION`: whether this service creates and updates the streams,
    /// consumers and buckets at start. A worker whose credentials may not (the `worker` role)
    /// sets `false` and waits for an api to have done it.
    #[serde(default = "default_provision")]
    pub nats_provision: bool,
    /// `VOIDRUNNER_NATS_CREDS`: a `.creds` file (user JWT and nkey seed) to authenticate with.
    pub nats_creds: Option<std::path::PathBuf>,
    /// `VOIDRUNNER_NATS_NKEY_SEED_FILE`: a file holding an nkey seed (`SU…`) to authenticate with.
    pub nats_nkey_seed_file: Option<std::path::PathBuf>,
    /// `VOIDRUNNER_NATS_USER` and `VOIDRUNNER_NATS_PASSWORD`: user and password to authenticate with.
    pub nats_user: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub nats_password: Option<String>,
    /// `VOIDRUNNER_NATS_PASSWORD_FILE`: the password read from a file instead (a mounted secret).
    pub nats_password_file: Option<std::path::PathBuf>,
    /// `VOIDRUNNER_NATS_TLS_CA`: PEM file of the CA that signed the servers' certificates; set,
    /// the connection must use TLS.
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// `VOIDRUNNER_NATS_TLS_CERT` and `VOIDRUNNER_NATS_TLS_KEY`: a client certificate and its
    /// key, for servers that verify clients.
    pub nats_tls_cert: Option<std::path::PathBuf>,
    pub nats_tls_key: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            NatsAuth::NkeySeedFile(path) => f.debug_tuple("NkeySeedFile").field(path).finish(),
            NatsAuth::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("nats_url", &self.nats_url)
            .field("nats_prefix", &self.nats_prefix)
            .field("nats_replicas", &self.nats_replicas)
            .field("nats_provision", &self.nats_provision)
            .field("nats_user", &self.nats_user)
            .field(
                "nats_password",
                &self.nats_password.as_ref().map(|_| "<redacted>"),
            )
            .field("nats_creds", &self.nats_creds)
            .field("nats_nkey_seed_file", &self.nats_nkey_seed_file)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .finish_non_exhaustive()
    }
}

/// How a service proves who it is to NATS. (Its Debug output hides the password.)
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: String },
    NkeySeedFile(std::path::PathBuf),
    CredsFile(std::path::PathBuf),
}

fn default_prefix() -> String {
    crate::Namespace::DEFAULT_PREFIX.to_owned()
}
fn default_replicas() -> usize {
    1
}
fn default_ack_wait_seconds() -> u64 {
    30
}
fn default_max_deliver() -> u32 {
    5
}
fn default_max_ack_pending() -> u32 {
    1000
}
fn default_provision() -> bool {
    true
}

impl NatsConfig {
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let config: NatsConfig = from_env(vars)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::Namespace::new(&self.nats_prefix)
            .map_err(|e| ConfigError::invalid("NATS_PREFIX", e))?;
        if !matches!(self.nats_replicas, 1 | 3 | 5) {
            return Err(ConfigError::invalid("NATS_REPLICAS", "must be 1, 3 or 5"));
        }
        if !(5..=3600).contains(&self.nats_ack_wait_seconds) {
            return Err(ConfigError::invalid(
                "NATS_ACK_WAIT_SECONDS",
                "must be between 5 and 3600",
            ));
        }
        if self.nats_max_deliver < 1 {
            return Err(ConfigError::invalid(
                "NATS_MAX_DELIVER",
                "must be at least 1",
            ));
        }
        if self.nats_max_ack_pending < 1 {
            return Err(ConfigError::invalid(
                "NATS_MAX_ACK_PENDING",
                "must be at least 1",
            ));
        }
        if self.nats_url.is_some() {
            self.servers()?;
        }
        self.auth()?;
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            return Err(ConfigError::invalid(
                "NATS_TLS_CERT",
                "and VOIDRUNNER_NATS_TLS_KEY go together: set both or neither",
            ));
        }
        for (variable, path) in [
            ("NATS_CREDS", &self.nats_creds),
            ("NATS_NKEY_SEED_FILE", &self.nats_nkey_seed_file),
            ("NATS_PASSWORD_FILE", &self.nats_password_file),
            ("NATS_TLS_CA", &self.nats_tls_ca),
            ("NATS_TLS_CERT", &self.nats_tls_cert),
            ("NATS_TLS_KEY", &self.nats_tls_key),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(ConfigError::invalid(
                        variable,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The server URLs of `VOIDRUNNER_NATS_URL` (comma separated; a cluster's clients are
    /// given several, and learn the rest from the servers).
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
        let url = self.required_url()?;
        let servers = url
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .map(|server| {
                server.parse::<async_nats::ServerAddr>().map_err(|error| {
                    ConfigError::invalid(
                        "NATS_URL",
                        format!(
                            "{server:?} is not a server URL ({error}); give one or more \
                             comma-separated URLs, e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(ConfigError::invalid(
                "NATS_URL",
                "is required, e.g. nats://127.0.0.1:4222",
            ));
        }
        Ok(servers)
    }

    fn password(&self) -> Result<String, ConfigError> {
        if let Some(password) = &self.nats_password {
            return Ok(password.clone());
        }
        let path = self
            .nats_password_file
            .as_ref()
            .ok_or_else(|| ConfigError::missing("NATS_PASSWORD"))?;
        std::fs::read_to_string(path)
            .map(|password| password.trim().to_owned())
            .map_err(|error| {
                ConfigError::invalid(
                    "NATS_PASSWORD_FILE",
                    format!("cannot read {}: {error}", path.display()),
                )
            })
    }

    /// The credentials to connect with; at most one kind may be configured.
    pub fn auth(&self) -> Result<NatsAuth, ConfigError> {
        let given = [
            self.nats_creds.is_some(),
            self.nats_nkey_seed_file.is_some(),
            self.nats_user.is_some(),
        ];
        if given.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::invalid(
                "NATS_CREDS",
                "VOIDRUNNER_NATS_CREDS, VOIDRUNNER_NATS_NKEY_SEED_FILE and VOIDRUNNER_NATS_USER \
                 are alternatives: set one of them",
            ));
        }
        if self.nats_password.is_some() && self.nats_password_file.is_some() {
            return Err(ConfigError::invalid(
                "NATS_PASSWORD_FILE",
                "and VOIDRUNNER_NATS_PASSWORD are alternatives: set one",
            ));
        }
        if (self.nats_password.is_some() || self.nats_password_file.is_some())
            && self.nats_user.is_none()
        {
            return Err(ConfigError::invalid(
                "NATS_PASSWORD",
                "is set without VOIDRUNNER_NATS_USER",
            ));
        }
        Ok(
            match (&self.nats_creds, &self.nats_nkey_seed_file, &self.nats_user) {
                (Some(creds), _, _) => NatsAuth::CredsFile(creds.clone()),
                (_, Some(seed), _) => NatsAuth::NkeySeedFile(seed.clone()),
                (_, _, Some(user)) => NatsAuth::UserPassword {
                    user: user.clone(),
                    password: self.password()?,
                },
                _ => NatsAuth::None,
            },
        )
    }

    /// The installation's names; the prefix was checked by `validate`.
    pub fn namespace(&self) -> crate::Namespace {
        crate::Namespace::new(&self.nats_prefix)
            .unwrap_or_else(|_| panic!("prefix {:?} was validated", self.nats_prefix))
    }

    /// The URL, or an error naming the variable, for services that cannot start their own server.
    pub fn required_url(&self) -> Result<&str, ConfigError> {
        self.nats_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::invalid("NATS_URL", "is required, e.g. nats://127.0.0.1:4222")
            })
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.nats_ack_wait_seconds)
    }
}

/// The sandbox policy: default limits, the maxima a task may ask for, and network access.
/// The api validates tasks against it and workers enforce it, so both read the same variables.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SandboxPolicy {
    /// `VOIDRUNNER_SANDBOX_MEMORY_MB`: memory of a sandbox whose task sets none (no swap).
    #[serde(default = "default_memory_mb")]
    pub sandbox_memory_mb: u32,
    /// `VOIDRUNNER_SANDBOX_MAX_MEMORY_MB`: the most memory a task may ask for.
    #[serde(default = "default_max_memory_mb")]
    pub sandbox_max_memory_mb: u32,
    /// `VOIDRUNNER_SANDBOX_CPUS`: CPU quota of a sandbox whose task sets none.
    #[serde(default = "default_cpus")]
    pub sandbox_cpus: f64,
    /// `VOIDRUNNER_SANDBOX_MAX_CPUS`: the most CPU a task may ask for.
    #[serde(default = "default_max_cpus")]
    pub sandbox_max_cpus: f64,
    /// `VOIDRUNNER_SANDBOX_OUTPUT_LIMIT_BYTES`: stdout and stderr kept, each, by default.
    #[serde(default = "default_output_limit_bytes")]
    pub sandbox_output_limit_bytes: u64,
    /// `VOIDRUNNER_SANDBOX_MAX_OUTPUT_LIMIT_BYTES`: the largest output limit a task may ask for.
    #[serde(default = "default_max_output_limit_bytes")]
    pub sandbox_max_output_limit_bytes: u64,
    /// `VOIDRUNNER_SANDBOX_NETWORK`: `none` refuses tasks that ask for network; any other value
    /// is the Docker network such tasks join (e.g. `bridge`). Other tasks never have network.
    #[serde(default = "default_network")]
    pub sandbox_network: String,
}

fn default_memory_mb() -> u32 {
    256
}
fn default_max_memory_mb() -> u32 {
    1024
}
fn default_cpus() -> f64 {
    1.0
}
fn default_max_cpus() -> f64 {
    2.0
}
fn default_output_limit_bytes() -> u64 {
    1024 * 1024
}
fn default_max_output_limit_bytes() -> u64 {
    // Both streams of a result, base64-encoded at worst, must fit NATS' 8 MB payload limit.
    2 * 1024 * 1024
}
fn default_network() -> String {
    "none".into()
}

/// Limits resolved for one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub memory_mb: u32,
    pub cpu_millis: u32,
    pub output_bytes: u64,
}

impl SandboxPolicy {
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let policy: SandboxPolicy = from_env(vars)?;
        policy.validate()?;
        Ok(policy)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sandbox_memory_mb < 16 || self.sandbox_memory_mb > self.sandbox_max_memory_mb {
            return Err(ConfigError::invalid(
                "SANDBOX_MEMORY_MB",
                "must be at least 16 and at most VOIDRUNNER_SANDBOX_MAX_MEMORY_MB",
            ));
        }
        let cpus_valid = |cpus: f64| (0.01..=64.0).contains(&cpus);
        if !cpus_valid(self.sandbox_max_cpus) {
            return Err(ConfigError::invalid(
                "SANDBOX_MAX_CPUS",
                "must be between 0.01 and 64",
            ));
        }
        if !cpus_valid(self.sandbox_cpus) || self.sandbox_cpus > self.sandbox_max_cpus {
            return Err(ConfigError::invalid(
                "SANDBOX_CPUS",
                "must be between 0.01 and VOIDRUNNER_SANDBOX_MAX_CPUS",
            ));
        }
        if self.sandbox_max_output_limit_bytes > default_max_output_limit_bytes() {
            return Err(ConfigError::invalid(
                "SANDBOX_MAX_OUTPUT_LIMIT_BYTES",
                format_args!(
                    "must be at most {} (results travel in one NATS message)",
                    default_max_output_limit_bytes()
                ),
            ));
        }
        if self.sandbox_output_limit_bytes < 1024
            || self.sandbox_output_limit_bytes > self.sandbox_max_output_limit_bytes
        {
            return Err(ConfigError::invalid(
                "SANDBOX_OUTPUT_LIMIT_BYTES",
                "must be at least 1024 and at most VOIDRUNNER_SANDBOX_MAX_OUTPUT_LIMIT_BYTES",
            ));
        }
        if self.sandbox_network.trim().is_empty() {
            return Err(ConfigError::invalid(
                "SANDBOX_NETWORK",
                "must be `none` or the name of a Docker network",
            ));
        }
        Ok(())
    }

    /// Whether tasks may ask for network access.
    pub fn network_allowed(&self) -> bool {
        self.sandbox_network != "none"
    }

    /// The limits of an execution: what it asked for, else the defaults.
    pub fn resolve(&self, requested: &crate::events::RequestedLimits) -> EffectiveLimits {
        EffectiveLimits {
            memory_mb: requested
                .memory_mb
                .unwrap_or(self.sandbox_memory_mb)
                .min(self.sandbox_max_memory_mb),
            cpu_millis: requested
                .cpu_millis
                .unwrap_or((self.sandbox_cpus * 1000.0).round() as u32)
                .min((self.sandbox_max_cpus * 1000.0).round() as u32),
            output_bytes: requested
                .output_bytes
                .unwrap_or(self.sandbox_output_limit_bytes)
                .min(self.sandbox_max_output_limit_bytes),
        }
    }

    /// The limits of an execution that asked for nothing.
    pub fn defaults(&self) -> EffectiveLimits {
        self.resolve(&crate::events::RequestedLimits::default())
    }

    /// The limits of an execution in `language`: as `resolve`, but a program that asks for no
    /// memory limit gets its language's default when that is more than the installation's
    /// (compilers and virtual machines need more).
    pub fn resolve_for(
        &self,
        language: crate::Language,
        requested: &crate::events::RequestedLimits,
    ) -> EffectiveLimits {
        let mut requested = *requested;
        if requested.memory_mb.is_none() {
            requested.memory_mb = language
                .definition()
                .memory_mb
                .filter(|&mb| mb > self.sandbox_memory_mb);
        }
        self.resolve(&requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unparsable_value_names_its_variable() {
        let error = NatsConfig::from_env(vars(&[("VOIDRUNNER_NATS_REPLICAS", "three")]))
            .expect_err("refused");
        assert_eq!(
            error.variable().as_deref(),
            Some("VOIDRUNNER_NATS_REPLICAS")
        );
        assert!(error.to_string().contains("(got 'three')"), "{error}");
        // An enum's unknown variant: envy does not say which variable, the retry does.
        let error = LogConfig::from_env(vars(&[
            ("VOIDRUNNER_OTHER", "x"),
            ("VOIDRUNNER_LOG_FORMAT", "xml"),
        ]))
        .expect_err("refused");
        assert_eq!(error.variable().as_deref(), Some("VOIDRUNNER_LOG_FORMAT"));
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = NatsConfig::from_env(vars(&[])).expect("defaults are valid");
        assert_eq!(config.nats_prefix, "voidrunner");
        assert_eq!(config.nats_url, None);
        assert_eq!(config.nats_max_deliver, 5);
    }

    #[test]
    fn a_comma_separated_server_list_is_every_server_of_a_cluster() {
        let config = NatsConfig::from_env(vars(&[(
            "VOIDRUNNER_NATS_URL",
            "nats://127.0.0.1:4222, nats://127.0.0.1:4223,tls://nats-2.internal:4224",
        )]))
        .expect("a list is valid");
        let servers = config.servers().expect("servers");
        let ports: Vec<u16> = servers.iter().map(|server| server.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(servers[2].tls_required());

        let error = NatsConfig::from_env(vars(&[(
            "VOIDRUNNER_NATS_URL",
            "nats://127.0.0.1:4222,nats://127.0.0.1:port",
        )]))
        .expect_err("a bad entry is refused");
        let message = error.to_string();
        assert!(message.contains("VOIDRUNNER_NATS_URL"), "{message}");
        assert!(message.contains("nats://127.0.0.1:port"), "{message}");
    }

    #[test]
    fn credentials_are_one_kind_and_complete() {
        let both = NatsConfig::from_env(vars(&[
            ("VOIDRUNNER_NATS_USER", "api"),
            ("VOIDRUNNER_NATS_PASSWORD", "x"),
            ("VOIDRUNNER_NATS_CREDS", "/etc/hostname"),
        ]))
        .expect_err("two kinds");
        assert!(both.to_string().contains("alternatives"), "{both}");
        let no_password = NatsConfig::from_env(vars(&[("VOIDRUNNER_NATS_USER", "api")]))
            .expect_err("user without password");
        assert!(
            no_password.to_string().contains("VOIDRUNNER_NATS_PASSWORD"),
            "{no_password}"
        );
        let missing_file = NatsConfig::from_env(vars(&[(
            "VOIDRUNNER_NATS_CREDS",
            "/nonexistent/worker.creds",
        )]))
        .expect_err("missing file");
        assert!(
            missing_file
                .to_string()
                .contains("/nonexistent/worker.creds"),
            "{missing_file}"
        );
        let half_tls = NatsConfig::from_env(vars(&[("VOIDRUNNER_NATS_TLS_CERT", "/etc/hostname")]))
            .expect_err("cert without key");
        assert!(
            half_tls.to_string().contains("VOIDRUNNER_NATS_TLS_KEY"),
            "{half_tls}"
        );
        let user = NatsConfig::from_env(vars(&[
            ("VOIDRUNNER_NATS_USER", "worker"),
            ("VOIDRUNNER_NATS_PASSWORD", "pw"),
        ]))
        .expect("user and password");
        let auth = user.auth().expect("auth");
        assert_eq!(
            auth,
            NatsAuth::UserPassword {
                user: "worker".into(),
                password: "pw".into()
            }
        );
        assert!(
            !format!("{auth:?} {user:?}").contains("pw\""),
            "a password in Debug output"
        );
    }

    #[test]
    fn requested_limits_are_clamped_to_the_operators_maxima() {
        let policy = SandboxPolicy::from_env(vars(&[])).expect("defaults are valid");
        let asked = crate::events::RequestedLimits {
            memory_mb: Some(64_000),
            cpu_millis: Some(500),
            output_bytes: None,
        };
        let limits = policy.resolve(&asked);
        assert_eq!(limits.memory_mb, 1024);
        assert_eq!(limits.cpu_millis, 500);
        assert_eq!(limits.output_bytes, 1024 * 1024);
        assert_eq!(policy.defaults().memory_mb, 256);
        assert!(!policy.network_allowed());
    }

    #[test]
    fn an_invalid_value_names_the_variable() {
        let error = NatsConfig::from_env(vars(&[("VOIDRUNNER_NATS_REPLICAS", "2")]))
            .expect_err("2 replicas is refused");
        assert!(
            error.to_string().contains("VOIDRUNNER_NATS_REPLICAS"),
            "{error}"
        );
        let error = NatsConfig::from_env(vars(&[("VOIDRUNNER_NATS_PREFIX", "a.b")]))
            .expect_err("dotted prefix is refused");
        assert!(
            error.to_string().contains("VOIDRUNNER_NATS_PREFIX"),
            "{error}"
        );
    }
}
