//! The REST client behind the `voidrunner` client commands: where the server is, how to
//! authenticate (an API key, or the session `voidrunner login` kept, refreshed as it expires),
//! and the API's errors as errors that say what to fix.

pub mod credentials;
pub mod sse;

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use voidrunner_shared::config::ConfigError;

use credentials::{Credentials, Session};

/// Where the api listens when `VOIDRUNNER_URL` is not set.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// A session is refreshed this long before its access token expires.
const REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// The client's configuration, from the environment.
#[derive(Debug, Deserialize, Serialize)]
pub struct ClientConfig {
    /// The api's base URL (`VOIDRUNNER_URL`).
    #[serde(default = "default_url")]
    pub url: String,
    /// An API key (`VOIDRUNNER_API_KEY`); without one, the session of `voidrunner login`.
    #[serde(default, serialize_with = "voidrunner_shared::config::redacted")]
    pub api_key: Option<String>,
}

fn default_url() -> String {
    DEFAULT_URL.to_owned()
}

impl ClientConfig {
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ClientConfig, ConfigError> {
        let config: ClientConfig = voidrunner_shared::config::from_env(vars)?;
        let url = config.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "URL",
                format_args!("must be an http:// or https:// URL, not {url:?}"),
            ));
        }
        Ok(config)
    }
}

/// What went wrong talking to the api.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the api at {url}: {cause} (is it running? set VOIDRUNNER_URL)")]
    Unreachable { url: String, cause: String },
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("not logged in to {server}: run `voidrunner login` or set VOIDRUNNER_API_KEY")]
    NotLoggedIn { server: String },
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The api's machine-readable code, for an error the api answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<anyhow::Error> for ClientError {
    fn from(error: anyhow::Error) -> Self {
        ClientError::Other(format!("{error:#}"))
    }
}

enum Auth {
    Key(String),
    Session(Credentials, tokio::sync::Mutex<Option<Session>>),
}

/// A client of one VoidRunner api.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
    expires_in: i64,
    refresh_token: String,
}

impl Client {
    /// From `VOIDRUNNER_URL` and `VOIDRUNNER_API_KEY`, else the kept session.
    pub fn from_env(vars: &[(String, String)]) -> Result<Client, ClientError> {
        let config = ClientConfig::from_env(vars.to_vec())
            .map_err(|error| ClientError::Other(format!("{error:#}")))?;
        let base = config.url.trim_end_matches('/').to_owned();
        let credentials = Credentials::from_env(vars)?;
        let auth = match config.api_key.filter(|key| !key.trim().is_empty()) {
            Some(key) => Auth::Key(key.trim().to_owned()),
            None => {
                let session = credentials.session(&base)?;
                Auth::Session(credentials, tokio::sync::Mutex::new(session))
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("voidrunner-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ClientError::Other(error.to_string()))?;
        Ok(Client { http, base, auth })
    }

    /// The server this client talks to.
    pub fn server(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        let mut cause = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            cause = format!("{cause}: {inner}");
            source = inner.source();
        }
        ClientError::Unreachable {
            url: self.base.clone(),
            cause,
        }
    }

    /// The credential to send: the API key, or a session's access token (refreshed first
    /// when it is about to expire, or when `stale` names the one the api just refused).
    async fn credential(&self, stale: Option<&str>) -> Result<(String, String), ClientError> {
        match &self.auth {
            Auth::Key(key) => Ok(("x-api-key".into(), key.clone())),
            Auth::Session(credentials, session) => {
                let mut session = session.lock().await;
                let Some(current) = session.as_ref() else {
                    return Err(ClientError::NotLoggedIn {
                        server: self.base.clone(),
                    });
                };
                let expiring = current.expires_at - REFRESH_MARGIN < Utc::now();
                if expiring || stale == Some(current.access_token.as_str()) {
                    *session = Some(self.refresh(credentials, current).await?);
                }
                let token = session
                    .as_ref()
                    .map(|s| s.access_token.clone())
                    .unwrap_or_default();
                Ok(("authorization".into(), format!("Bearer {token}")))
            }
        }
    }

    /// New tokens for `current`, kept for the next command. Refresh tokens work once, so
    /// concurrent commands take turns on a lock file, and one that finds the session already
    /// refreshed by another uses that.
    async fn refresh(
        &self,
        credentials: &Credentials,
        current: &Session,
    ) -> Result<Session, ClientError> {
        let lock_path = credentials.path().with_extension("lock");
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ClientError::Other(e.to_string()))?;
        }
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| ClientError::Other(format!("{}: {e}", lock_path.display())))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
            .map_err(|e| ClientError::Other(format!("locking the credentials: {e}")))?;
        if let Some(kept) = credentials.session(&self.base)? {
            if kept.access_token != current.access_token && kept.expires_at > Utc::now() {
                return Ok(kept);
            }
        }
        let response = self
            .http
            .post(self.url("/auth/refresh"))
            .json(&json!({ "refresh_token": current.refresh_token }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            credentials.forget(&self.base)?;
            return Err(ClientError::NotLoggedIn {
                server: self.base.clone(),
            });
        }
        let tokens: Tokens = serde_json::from_value(answer(response).await?)
            .map_err(|e| ClientError::Other(format!("the api's tokens: {e}")))?;
        let session = Session {
            email: current.email.clone(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at: Utc::now() + chrono::TimeDelta::seconds(tokens.expires_in),
        };
        credentials.save(&self.base, session.clone())?;
        drop(lock);
        Ok(session)
    }

    /// Sends an authenticated request; a refused access token is refreshed and tried once more.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_with(method, path, body, &[]).await
    }

    /// An execution's events (`GET /executions/{id}/events`), resumed after `last_event_id`.
    pub async fn events(
        &self,
        execution_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let headers: Vec<(&str, &str)> = last_event_id
            .map(|last| vec![("last-event-id", last)])
            .unwrap_or_default();
        let path = format!("/executions/{execution_id}/events");
        let response = self.send_with(Method::GET, &path, None, &headers).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(answer(response)
            .await
            .err()
            .unwrap_or_else(|| ClientError::Other("the api refused the event stream".into())))
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, ClientError> {
        let mut stale = None;
        loop {
            let (header, value) = self.credential(stale.as_deref()).await?;
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .header(&header, &value);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| self.unreachable(e))?;
            let session = matches!(self.auth, Auth::Session(..));
            if response.status() == StatusCode::UNAUTHORIZED && session && stale.is_none() {
                stale = Some(value.trim_start_matches("Bearer ").to_owned());
                continue;
            }
            return Ok(response);
        }
    }

    /// An authenticated request whose answer is JSON (null for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        answer(self.send(method, path, body).await?).await
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Logs in with a password and keeps the session for this server.
    pub async fn login(&self, email: &str, password: &str) -> Result<Session, ClientError> {
        let Auth::Session(credentials, kept) = &self.auth else {
            return Err(ClientError::Other(
                "VOIDRUNNER_API_KEY is set: unset it to log in with a password".into(),
            ));
        };
        let response = self
            .http
            .post(self.url("/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let tokens: Tokens = serde_json::from_value(answer(response).await?)
            .map_err(|e| ClientError::Other(format!("the api's tokens: {e}")))?;
        let session = Session {
            email: email.to_owned(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at: Utc::now() + chrono::TimeDelta::seconds(tokens.expires_in),
        };
        credentials.save(&self.base, session.clone())?;
        *kept.lock().await = Some(session.clone());
        Ok(session)
    }

    /// Ends the kept session at the api and forgets it; whether there was one.
    pub async fn logout(&self) -> Result<bool, ClientError> {
        let Auth::Session(credentials, kept) = &self.auth else {
            return Err(ClientError::Other(
                "VOIDRUNNER_API_KEY is set: there is no session to log out of".into(),
            ));
        };
        if kept.lock().await.is_none() {
            return Ok(false);
        }
        // The session ends at the api too; forgetting it here is what matters if that fails.
        let _ = self.call(Method::POST, "/auth/logout", None).await;
        credentials.forget(&self.base)?;
        Ok(true)
    }
}

/// The JSON of a successful answer, or the api's error.
pub async fn answer(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::Other(format!("reading the api's answer: {e}")))?;
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    Err(ClientError::Api {
        status: status.as_u16(),
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the api answered {status}")),
    })
}
