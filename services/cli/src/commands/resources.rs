//! The commands that list and change what a user has at the api: executions, tasks, dead
//! letters, API keys, batches of runs, and the fleet's workers.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Value};

use super::table::{self, field, time, Column, Format};
use crate::client::{Client, ClientError};

#[derive(Debug, clap::Subcommand)]
pub enum Executions {
    /// Your executions, newest first.
    Ls {
        /// Only those in this state (queued, running, completed, failed, timeout, cancelled, error).
        #[arg(long)]
        status: Option<String>,
        /// Only the executions of this task.
        #[arg(long)]
        task: Option<String>,
        /// How many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One execution, whole.
    Show { id: String },
    /// An execution's stdout and stderr, to this command's stdout and stderr.
    Logs {
        id: String,
        /// Follow the output live until the execution ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Cancels a queued or running execution.
    Cancel { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum Tasks {
    /// Your tasks, newest first.
    Ls {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One task, whole.
    Show { id: String },
    /// Deletes a task and its executions.
    Rm { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadLetters {
    /// Your executions the fleet gave up on, newest first.
    Ls,
    /// Runs a dead-lettered execution again (once).
    Rerun { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeys {
    /// Your API keys.
    Ls,
    /// A new key; it is shown once.
    Create { name: String },
    /// Revokes a key at once.
    Revoke { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum Runs {
    /// Submits the runs of a JSON Lines file (one `POST /runs` body per line), 100 per request.
    Batch {
        file: PathBuf,
        /// Wait for every run to end and show how each ended; exits 1 unless all exited 0.
        #[arg(long)]
        wait: bool,
    },
}

const EXECUTION_COLUMNS: &[Column] = &[
    Column {
        heading: "ID",
        cell: |e| field(e, "id"),
    },
    Column {
        heading: "STATUS",
        cell: |e| field(e, "status"),
    },
    Column {
        heading: "EXIT",
        cell: |e| field(e, "exit_code"),
    },
    Column {
        heading: "DURATION",
        cell: |e| match e["duration_ms"].as_i64() {
            Some(ms) => format!("{ms} ms"),
            None => "-".into(),
        },
    },
    Column {
        heading: "CREATED",
        cell: |e| time(e, "created_at"),
    },
];

const TASK_COLUMNS: &[Column] = &[
    Column {
        heading: "ID",
        cell: |t| field(t, "id"),
    },
    Column {
        heading: "NAME",
        cell: |t| field(t, "name"),
    },
    Column {
        heading: "LANGUAGE",
        cell: |t| field(t, "script_type"),
    },
    Column {
        heading: "STATUS",
        cell: |t| field(t, "status"),
    },
    Column {
        heading: "CREATED",
        cell: |t| time(t, "created_at"),
    },
];

const DEAD_LETTER_COLUMNS: &[Column] = &[
    Column {
        heading: "ID",
        cell: |e| field(e, "id"),
    },
    Column {
        heading: "TASK",
        cell: |e| field(e, "task_id"),
    },
    Column {
        heading: "ERROR",
        cell: |e| field(e, "error"),
    },
    Column {
        heading: "DEAD-LETTERED",
        cell: |e| time(e, "dead_lettered_at"),
    },
];

const API_KEY_COLUMNS: &[Column] = &[
    Column {
        heading: "ID",
        cell: |k| field(k, "id"),
    },
    Column {
        heading: "NAME",
        cell: |k| field(k, "name"),
    },
    Column {
        heading: "PREFIX",
        cell: |k| field(k, "prefix"),
    },
    Column {
        heading: "CREATED",
        cell: |k| time(k, "created_at"),
    },
    Column {
        heading: "LAST USED",
        cell: |k| time(k, "last_used_at"),
    },
];

const WORKER_COLUMNS: &[Column] = &[
    Column {
        heading: "ID",
        cell: |w| field(w, "id"),
    },
    Column {
        heading: "HOST",
        cell: |w| field(w, "host"),
    },
    Column {
        heading: "BACKEND",
        cell: |w| field(w, "backend"),
    },
    Column {
        heading: "BUSY",
        cell: |w| format!("{}/{}", field(w, "busy"), field(w, "slots")),
    },
    Column {
        heading: "LANGUAGES",
        cell: |w| {
            w["languages"]
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        },
    },
    Column {
        heading: "DRAINING",
        cell: |w| field(w, "draining"),
    },
];

/// One item printed: JSON as the api sent it, or its fields one per line.
fn print_one(item: &Value, format: Format) {
    match (format, item.as_object()) {
        (Format::Table, Some(object)) => {
            let width = object.keys().map(String::len).max().unwrap_or(0);
            for (name, value) in object {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => "-".into(),
                    other => other.to_string(),
                };
                crate::commands::table::out(format_args!("{name:width$}  {value}"));
            }
        }
        _ => crate::commands::table::out(format_args!(
            "{}",
            serde_json::to_string_pretty(item).unwrap_or_default()
        )),
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| {
            value
                .as_ref()
                .map(|value| format!("{name}={}", encode(value)))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

impl Executions {
    pub async fn execute(self, client: &Client, format: Format) -> Result<u8, ClientError> {
        match self {
            Executions::Ls {
                status,
                task,
                limit,
            } => {
                let base = match task {
                    Some(task) => format!("/tasks/{task}/executions"),
                    None => "/executions".to_owned(),
                };
                let path = format!(
                    "{base}{}",
                    query(&[("limit", Some(limit.to_string())), ("status", status)])
                );
                let page = client.get(&path).await?;
                table::print(&page["items"], EXECUTION_COLUMNS, format);
            }
            Executions::Show { id } => {
                print_one(&client.get(&format!("/executions/{id}")).await?, format)
            }
            Executions::Logs { id, follow } => return super::run::logs(client, &id, follow).await,
            Executions::Cancel { id } => {
                let execution = client
                    .call(Method::POST, &format!("/executions/{id}/cancel"), None)
                    .await?;
                match format {
                    Format::Json => print_one(&execution, format),
                    Format::Table => crate::commands::table::out(format_args!(
                        "{id}: {}",
                        field(&execution, "status")
                    )),
                }
            }
        }
        Ok(0)
    }
}

impl Tasks {
    pub async fn execute(self, client: &Client, format: Format) -> Result<u8, ClientError> {
        match self {
            Tasks::Ls { limit } => {
                let page = client.get(&format!("/tasks?limit={limit}")).await?;
                table::print(&page["items"], TASK_COLUMNS, format);
            }
            Tasks::Show { id } => print_one(&client.get(&format!("/tasks/{id}")).await?, format),
            Tasks::Rm { id } => {
                client
                    .call(Method::DELETE, &format!("/tasks/{id}"), None)
                    .await?;
                crate::commands::table::out(format_args!("deleted task {id}"));
            }
        }
        Ok(0)
    }
}

impl DeadLetters {
    pub async fn execute(self, client: &Client, format: Format) -> Result<u8, ClientError> {
        match self {
            DeadLetters::Ls => {
                let items = client.get("/dead-letters").await?;
                table::print(&items, DEAD_LETTER_COLUMNS, format);
            }
            DeadLetters::Rerun { id } => {
                let execution = client
                    .call(Method::POST, &format!("/dead-letters/{id}/rerun"), None)
                    .await?;
                match format {
                    Format::Json => print_one(&execution, format),
                    Format::Table => {
                        crate::commands::table::out(format_args!("{}", field(&execution, "id")))
                    }
                }
            }
        }
        Ok(0)
    }
}

impl ApiKeys {
    pub async fn execute(self, client: &Client, format: Format) -> Result<u8, ClientError> {
        match self {
            ApiKeys::Ls => {
                let items = client.get("/auth/api-keys").await?;
                table::print(&items, API_KEY_COLUMNS, format);
            }
            ApiKeys::Create { name } => {
                let key = client
                    .post("/auth/api-keys", &json!({ "name": name }))
                    .await?;
                match format {
                    Format::Json => print_one(&key, format),
                    Format::Table => {
                        crate::commands::table::out(format_args!("{}", field(&key, "key")));
                        eprintln!(
                            "voidrunner: API key {} created; it is shown once, keep it (VOIDRUNNER_API_KEY)",
                            field(&key, "id")
                        );
                    }
                }
            }
            ApiKeys::Revoke { id } => {
                client
                    .call(Method::DELETE, &format!("/auth/api-keys/{id}"), None)
                    .await?;
                crate::commands::table::out(format_args!("revoked API key {id}"));
            }
        }
        Ok(0)
    }
}

impl Runs {
    pub async fn execute(self, client: &Client, format: Format) -> Result<u8, ClientError> {
        let Runs::Batch { file, wait } = self;
        let text = std::fs::read_to_string(&file)
            .map_err(|error| ClientError::Other(format!("reading {}: {error}", file.display())))?;
        let mut runs = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let run: Value = serde_json::from_str(line).map_err(|error| {
                ClientError::Other(format!(
                    "{}:{}: not JSON: {error}",
                    file.display(),
                    index + 1
                ))
            })?;
            runs.push(run);
        }
        if runs.is_empty() {
            return Err(ClientError::Other(format!(
                "{} holds no runs: one JSON object per line, as POST /runs takes",
                file.display()
            )));
        }
        let mut submitted = Vec::new();
        for chunk in runs.chunks(100) {
            let answer = client
                .post("/runs/batch", &json!({ "runs": chunk }))
                .await?;
            submitted.extend(answer["items"].as_array().cloned().unwrap_or_default());
        }
        if !wait {
            table::print(&Value::Array(submitted), EXECUTION_COLUMNS, format);
            return Ok(0);
        }
        let ended = until_ended(client, submitted).await?;
        table::print(&Value::Array(ended.clone()), EXECUTION_COLUMNS, format);
        let all_succeeded = ended
            .iter()
            .all(|execution| super::exit::of_execution(execution).0 == 0);
        Ok(if all_succeeded { 0 } else { 1 })
    }
}

/// The executions again once each has ended, in the order given (polled, a few at a time).
async fn until_ended(client: &Client, executions: Vec<Value>) -> Result<Vec<Value>, ClientError> {
    use futures::{StreamExt, TryStreamExt};
    let ended = |execution: &Value| {
        execution["status"]
            .as_str()
            .and_then(|status| status.parse::<voidrunner_shared::Status>().ok())
            .is_some_and(voidrunner_shared::Status::is_final)
    };
    futures::stream::iter(executions)
        .map(|mut execution| async move {
            let mut pause = std::time::Duration::from_millis(100);
            while !ended(&execution) {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
                let id = execution["id"].as_str().unwrap_or_default().to_owned();
                execution = client.get(&format!("/executions/{id}")).await?;
            }
            Ok::<_, ClientError>(execution)
        })
        .buffered(8)
        .try_collect()
        .await
}

/// `voidrunner workers`: the live fleet.
pub async fn workers(client: &Client, format: Format) -> Result<u8, ClientError> {
    let items = client.get("/workers").await?;
    table::print(&items, WORKER_COLUMNS, format);
    Ok(0)
}

/// `voidrunner languages`: what the installation runs, and how many live workers serve each.
pub async fn languages(client: &Client, format: Format) -> Result<u8, ClientError> {
    let items = client.get("/languages").await?;
    table::print(&items, LANGUAGE_COLUMNS, format);
    Ok(0)
}

const LANGUAGE_COLUMNS: &[Column] = &[
    Column {
        heading: "ID",
        cell: |l| field(l, "id"),
    },
    Column {
        heading: "NAME",
        cell: |l| field(l, "name"),
    },
    Column {
        heading: "VERSION",
        cell: |l| field(l, "version"),
    },
    Column {
        heading: "FILE",
        cell: |l| field(l, "main_file"),
    },
    Column {
        heading: "ALIASES",
        cell: |l| {
            l["aliases"]
                .as_array()
                .map(|aliases| {
                    aliases
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        },
    },
    Column {
        heading: "WORKERS",
        cell: |l| field(l, "workers"),
    },
];
