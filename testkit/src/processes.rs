//! Services as separate OS processes, and a PostgreSQL cluster of a test's own, for the tests
//! that kill, stop and restart them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

/// Where `free_port` looks: below the kernel's ephemeral range (Linux: 32768-60999), so that
/// a socket bound to port 0 meanwhile (a worker's metrics endpoint, a client connection) cannot
/// take the port between this choice and the service binding it.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port nothing listens on right now, chosen at random from `TEST_PORTS`.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TEST_PORTS.start
            + (uuid::Uuid::new_v4().as_u128() % u128::from(TEST_PORTS.end - TEST_PORTS.start))
                as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// `voidrunner` processes of one test, each logging to its own file; killed when dropped.
pub struct Processes {
    bin: PathBuf,
    vars: Vec<(String, String)>,
    logs: TempDir,
    children: BTreeMap<String, Child>,
}

impl Processes {
    /// Processes of the `bin` binary, all with the environment `vars`.
    pub fn new(bin: &str, vars: Vec<(String, String)>) -> Processes {
        Processes {
            bin: PathBuf::from(bin),
            vars,
            logs: TempDir::new().expect("log dir"),
            children: BTreeMap::new(),
        }
    }

    /// Runs `voidrunner <command>` to completion (e.g. `migrate`), failing the test if it fails.
    pub async fn run_to_completion(&self, command: &str) {
        let output = Command::new(&self.bin)
            .arg(command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await
            .expect("run voidrunner");
        assert!(
            output.status.success(),
            "voidrunner {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts `voidrunner <command>` as `name`, with `extra` variables on top of the shared ones.
    pub fn start(&mut self, name: &str, command: &str, extra: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .expect("log file");
        let child = Command::new(&self.bin)
            .arg(command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn voidrunner");
        self.children.insert(name.to_owned(), child);
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub async fn kill(&mut self, name: &str) {
        let mut child = self
            .children
            .remove(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        child.kill().await.expect("kill -9");
    }

    /// SIGTERM, then waits up to `within` for the process to exit; returns whether it exited
    /// successfully.
    pub async fn terminate(&mut self, name: &str, within: Duration) -> bool {
        let mut child = self
            .children
            .remove(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let pid = child.id().expect("running process has a pid");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "SIGTERM to {name}");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => status.expect("wait").success(),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "{name} did not exit within {within:?} of SIGTERM\n{}",
                    self.logs()
                );
            }
        }
    }

    /// The process id of `name`, while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name).and_then(Child::id)
    }

    /// Fails the test if `name` is no longer running.
    pub fn assert_running(&mut self, name: &str) {
        let child = self
            .children
            .get_mut(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        if let Some(status) = child.try_wait().expect("process status") {
            panic!("{name} exited with {status}\n{}", self.logs());
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    /// Everything `name` has logged so far.
    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.logs.path())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {name}\n{}",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the api at `base_url` answers `/ready`, failing if `name` exits first.
    pub async fn wait_ready(&mut self, name: &str, http: &reqwest::Client, base_url: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{base_url}/ready")).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            self.assert_running(name);
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not ready within 60 s\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A PostgreSQL cluster of one test's own (trust auth, throwaway), so the test can stop and
/// start it. Needs root (it runs the server as the `postgres` user) and PostgreSQL 15's binaries.
pub struct OwnPostgres {
    dir: TempDir,
    port: u16,
    bin: PathBuf,
}

impl OwnPostgres {
    pub async fn start() -> OwnPostgres {
        let bin = PathBuf::from(
            std::env::var("VR_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        assert!(
            bin.join("initdb").is_file(),
            "this test runs a PostgreSQL cluster of its own and needs initdb in {} \
             (scripts/test.sh installs postgresql-15)",
            bin.display()
        );
        let dir = TempDir::new().expect("temp dir for postgres");
        let port = free_port();
        let data = dir.path().join("data");
        run_checked(
            Command::new("chown").args(["postgres:"]).arg(dir.path()),
            "chown the cluster directory to postgres",
        )
        .await;
        run_checked(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ]),
            "initdb",
        )
        .await;
        let config = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            dir.path().display()
        );
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("read conf");
        conf.push_str(&config);
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
        let cluster = OwnPostgres { dir, port, bin };
        cluster.start_again().await;
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn pg_ctl(&self, args: &[&str]) {
        run_checked(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .args(args),
            "pg_ctl",
        )
        .await;
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub async fn start_again(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]).await;
    }

    /// Stops the server at once, dropping every connection (`pg_ctl stop -m fast`).
    pub async fn stop(&self) {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]).await;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn run_checked(command: &mut Command, what: &str) {
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
