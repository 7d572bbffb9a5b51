//! Configuration of the api service.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize, Serializer};
use voidrunner_shared::config::{from_env, redacted, ConfigError};

#[derive(Clone, Deserialize, Serialize)]
pub struct ApiConfig {
    /// `VOIDRUNNER_API_ADDR`: where the REST API listens.
    #[serde(default = "default_api_addr")]
    pub api_addr: SocketAddr,
    /// `VOIDRUNNER_DATABASE_URL`: `postgres://...` or `sqlite://path?mode=rwc`.
    #[serde(serialize_with = "redacted_url")]
    pub database_url: Option<String>,
    /// `VOIDRUNNER_JWT_SECRET`: HMAC key for access tokens, at least 32 bytes.
    #[serde(serialize_with = "redacted")]
    pub jwt_secret: Option<String>,
    /// `VOIDRUNNER_JWT_TTL_SECONDS`: lifetime of an access token.
    #[serde(default = "default_jwt_ttl_seconds")]
    pub jwt_ttl_seconds: u64,
    /// `VOIDRUNNER_REFRESH_TTL_SECONDS`: lifetime of a refresh token (each use rotates it).
    #[serde(default = "default_refresh_ttl_seconds")]
    pub refresh_ttl_seconds: u64,
    /// `VOIDRUNNER_AUTO_MIGRATE`: apply pending migrations at start-up instead of refusing to start.
    #[serde(default)]
    pub auto_migrate: bool,
    /// `VOIDRUNNER_DEFAULT_TIMEOUT_SECONDS`: timeout of a task that does not ask for one.
    #[serde(default = "default_timeout_seconds")]
    pub default_timeout_seconds: u32,
    /// `VOIDRUNNER_MAX_TIMEOUT_SECONDS`: the longest timeout a task may ask for.
    #[serde(default = "default_max_timeout_seconds")]
    pub max_timeout_seconds: u32,
    /// `VOIDRUNNER_MAX_SCRIPT_BYTES`: the largest `script_content` accepted.
    #[serde(default = "default_max_script_bytes")]
    pub max_script_bytes: usize,
    /// `VOIDRUNNER_MAX_STDIN_BYTES`: the largest `stdin` an execution may be given.
    #[serde(default = "default_max_stdin_bytes")]
    pub max_stdin_bytes: usize,
    /// `VOIDRUNNER_OUTBOX_SWEEP_SECONDS`: how often undispatched executions are republished.
    #[serde(default = "default_outbox_sweep_seconds")]
    pub outbox_sweep_seconds: u64,
    /// `VOIDRUNNER_MAX_ACTIVE_PER_USER`: how many of one user's executions may be on the lanes or
    /// running at once, across the fleet; the rest wait their turn in the database. `unlimited`
    /// turns admission off (a fleet of one trusted tenant).
    #[serde(default = "default_max_active_per_user")]
    pub max_active_per_user: ActiveLimit,
    /// `VOIDRUNNER_DRAIN_SECONDS`: on shutdown, how long in-flight requests and recordings may take.
    #[serde(default = "default_drain_seconds")]
    pub drain_seconds: u64,
    /// `VOIDRUNNER_REQUEST_TIMEOUT_SECONDS`: the longest a request may take to be answered
    /// (live-output streams are answered at once and then stream for as long as they need).
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// `VOIDRUNNER_CORS_ORIGINS`: origins browsers may call the API from, comma separated, or `*`;
    /// empty (the default) sends no CORS headers.
    #[serde(default)]
    pub cors_origins: String,
    /// `VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE`: let callback URLs reach loopback and private
    /// addresses (off by default, so that users cannot aim the api at internal services).
    #[serde(default)]
    pub webhook_allow_private: bool,
    /// `VOIDRUNNER_WEBHOOK_MAX_ATTEMPTS`: deliveries tried before a webhook is given up.
    #[serde(default = "default_webhook_max_attempts")]
    pub webhook_max_attempts: u32,
    /// `VOIDRUNNER_WEBHOOK_TIMEOUT_SECONDS`: how long a receiver has to answer one delivery.
    #[serde(default = "default_webhook_timeout_seconds")]
    pub webhook_timeout_seconds: u64,
    /// `VOIDRUNNER_RATE_LIMIT_PER_USER`: requests a minute per user or API key (0: no limit).
    #[serde(default = "default_rate_limit_per_user")]
    pub rate_limit_per_user: u32,
    /// `VOIDRUNNER_RATE_LIMIT_PER_IP`: requests a minute per client address (0: no limit).
    #[serde(default = "default_rate_limit_per_ip")]
    pub rate_limit_per_ip: u32,
    /// `VOIDRUNNER_MAX_STREAMS_PER_USER`: live-output streams a user may hold open at once in
    /// one api replica (0: no limit).
    #[serde(default = "default_max_streams_per_user")]
    pub max_streams_per_user: usize,
    /// `VOIDRUNNER_TRUST_PROXY`: take the client address from `X-Forwarded-For` (set it only
    /// behind a proxy that overwrites that header).
    #[serde(default)]
    pub trust_proxy: bool,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("api_addr", &self.api_addr)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_ttl_seconds", &self.jwt_ttl_seconds)
            .field("refresh_ttl_seconds", &self.refresh_ttl_seconds)
            .field("auto_migrate", &self.auto_migrate)
            .field("default_timeout_seconds", &self.default_timeout_seconds)
            .field("max_timeout_seconds", &self.max_timeout_seconds)
            .field("max_script_bytes", &self.max_script_bytes)
            .field("max_stdin_bytes", &self.max_stdin_bytes)
            .field("outbox_sweep_seconds", &self.outbox_sweep_seconds)
            .field("max_active_per_user", &self.max_active_per_user)
            .field("drain_seconds", &self.drain_seconds)
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .field("cors_origins", &self.cors_origins)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_timeout_seconds", &self.webhook_timeout_seconds)
            .field("rate_limit_per_user", &self.rate_limit_per_user)
            .field("rate_limit_per_ip", &self.rate_limit_per_ip)
            .field("max_streams_per_user", &self.max_streams_per_user)
            .field("trust_proxy", &self.trust_proxy)
            .finish()
    }
}

fn redacted_url<S: Serializer>(url: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&redact_url(url)),
        None => serializer.serialize_none(),
    }
}

/// Hides the password of a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
                }
                // A user without a password has nothing to hide.
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn default_api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_jwt_ttl_seconds() -> u64 {
    15 * 60
}
fn default_refresh_ttl_seconds() -> u64 {
    30 * 24 * 3600
}
fn default_timeout_seconds() -> u32 {
    30
}
fn default_max_timeout_seconds() -> u32 {
    3600
}
fn default_max_script_bytes() -> usize {
    64 * 1024
}
fn default_max_stdin_bytes() -> usize {
    1024 * 1024
}
fn default_outbox_sweep_seconds() -> u64 {
    5
}
fn default_max_active_per_user() -> ActiveLimit {
    ActiveLimit::PerUser(16)
}

/// How many of a user's executions may be active at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveLimit {
    PerUser(u32),
    /// No per-user admission: every execution is admitted at once, and no count is kept.
    Unlimited,
}

impl std::str::FromStr for ActiveLimit {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "unlimited" => Ok(ActiveLimit::Unlimited),
            number => match number.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!(
                    "{value:?} is neither a number of executions (at least 1) nor `unlimited`"
                )),
                Ok(limit) => Ok(ActiveLimit::PerUser(limit)),
            },
        }
    }
}

impl std::fmt::Display for ActiveLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActiveLimit::PerUser(limit) => write!(f, "{limit}"),
            ActiveLimit::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for ActiveLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ActiveLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(|problem| {
            serde::de::Error::custom(format!("VOIDRUNNER_MAX_ACTIVE_PER_USER: {problem}"))
        })
    }
}
fn default_drain_seconds() -> u64 {
    10
}
fn default_request_timeout_seconds() -> u64 {
    60
}
fn default_rate_limit_per_user() -> u32 {
    600
}
fn default_rate_limit_per_ip() -> u32 {
    1200
}
fn default_max_streams_per_user() -> usize {
    16
}
fn default_webhook_max_attempts() -> u32 {
    8
}
fn default_webhook_timeout_seconds() -> u64 {
    10
}

/// The shortest JWT secret accepted, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl ApiConfig {
    /// The longest a request may wait for its result (`wait_seconds`): under the request
    /// time limit, so that the answer comes before the limit cuts the request off.
    pub fn max_wait_seconds(&self) -> u64 {
        self.request_timeout_seconds.saturating_sub(1).max(1)
    }
}

impl ApiConfig {
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut config: ApiConfig = from_env(vars)?;
        // An empty value is no value (compose passes variables through whether set or not).
        config.jwt_secret = config.jwt_secret.filter(|secret| !secret.trim().is_empty());
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(ConfigError::invalid(
                    "JWT_SECRET",
                    format_args!("must be at least {MIN_JWT_SECRET_BYTES} bytes, e.g. `openssl rand -hex 32`"),
                ));
            }
        }
        if self.jwt_ttl_seconds < 60 {
            return Err(ConfigError::invalid(
                "JWT_TTL_SECONDS",
                "must be at least 60",
            ));
        }
        if self.max_timeout_seconds == 0 {
            return Err(ConfigError::invalid(
                "MAX_TIMEOUT_SECONDS",
                "must be at least 1",
            ));
        }
        if self.default_timeout_seconds == 0
            || self.default_timeout_seconds > self.max_timeout_seconds
        {
            return Err(ConfigError::invalid(
                "DEFAULT_TIMEOUT_SECONDS",
                format_args!(
                    "must be between 1 and VOIDRUNNER_MAX_TIMEOUT_SECONDS ({})",
                    self.max_timeout_seconds
                ),
            ));
        }
        // Script, files and stdin travel in one NATS message (8 MB at most).
        if self.max_script_bytes + self.max_stdin_bytes > 6 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "MAX_STDIN_BYTES",
                "plus VOIDRUNNER_MAX_SCRIPT_BYTES must be at most 6 MiB (one NATS message carries both)",
            ));
        }
        if self.max_script_bytes == 0 {
            return Err(ConfigError::invalid(
                "MAX_SCRIPT_BYTES",
                "must be at least 1",
            ));
        }
        if self.request_timeout_seconds == 0 {
            return Err(ConfigError::invalid(
                "REQUEST_TIMEOUT_SECONDS",
                "must be at least 1",
            ));
        }
        for origin in self.cors_origin_list() {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "CORS_ORIGINS",
                    format_args!("{origin:?} is not an origin like https://app.example.com (or *)"),
                ));
            }
        }
        if self.outbox_sweep_seconds == 0 {
            return Err(ConfigError::invalid(
                "OUTBOX_SWEEP_SECONDS",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The configured CORS origins, trimmed, without empty entries.
    pub fn cors_origin_list(&self) -> Vec<&str> {
        self.cors_origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .collect()
    }

    /// The database URL, or an error naming the variable, for the distributed `api` command.
    pub fn required_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or_else(|| {
            ConfigError::invalid(
                "DATABASE_URL",
                "is required, e.g. postgres://user:pass@host/voidrunner",
            )
        })
    }

    pub fn required_jwt_secret(&self) -> Result<&str, ConfigError> {
        self.jwt_secret.as_deref().ok_or_else(|| {
            ConfigError::invalid("JWT_SECRET", "is required, e.g. `openssl rand -hex 32`")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/vr"),
            "postgres://app:***@db:5432/vr"
        );
        assert_eq!(redact_url("sqlite://data/vr.db"), "sqlite://data/vr.db");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:54329/vr"),
            "postgres://postgres@127.0.0.1:54329/vr"
        );
    }

    #[test]
    fn a_short_jwt_secret_is_refused_with_the_variable_named() {
        let vars = vec![("VOIDRUNNER_JWT_SECRET".to_string(), "short".to_string())];
        let error = ApiConfig::from_env(vars).expect_err("short secret refused");
        assert!(
            error.to_string().contains("VOIDRUNNER_JWT_SECRET"),
            "{error}"
        );
    }
}
