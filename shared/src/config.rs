//! Configuration read from `VOIDRUNNER_*` environment variables.
//!
//! Each service owns a typed struct; they are all read from one explicit map of variables (not
//! from deep inside the code), validated at start-up, and their errors name the variable to fix.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The prefix of every configuration variable.
pub const ENV_PREFIX: &str = "VOIDRUNNER_";

/// A configuration error that names the variable and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub fn invalid(variable: &str, problem: impl std::fmt::Display) -> Self {
        ConfigError(format!("{ENV_PREFIX}{variable}: {problem}"))
    }
}

/// Reads `T` from the `VOIDRUNNER_*` entries of `vars` (field `foo_bar` is `VOIDRUNNER_FOO_BAR`).
pub fn from_env<T: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    envy::prefixed(ENV_PREFIX)
        .from_iter(vars)
        .map_err(|error| match error {
            envy::Error::MissingValue(field) => ConfigError(format!(
                "{ENV_PREFIX}{} is required but not set",
                field.to_ascii_uppercase()
            )),
            envy::Error::Custom(message) => ConfigError(format!(
                "{message} (variables start with {ENV_PREFIX}; see the configuration table in the README)"
            )),
        })
}

/// How a service reaches NATS and which installation (subject prefix) it belongs to.
#[derive(Debug, Clone, Deserialize)]
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
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
