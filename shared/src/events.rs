//! The versioned JSON events that travel over NATS.
//!
//! Every payload is an object whose `schema` field names its type and version
//! (`voidrunner.dispatch.v1`, ...). A new version is a new variant; consumers keep accepting the
//! old ones for as long as they can be in flight. The JSON Schemas in `nats/schemas/` are
//! generated from these types and a test keeps them in step.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Lane, Language, Status};

/// An execution to run, published on `<p>.tasks.<lane>.<language>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "schema")]
pub enum Dispatch {
    #[serde(rename = "voidrunner.dispatch.v1")]
    V1(DispatchV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchV1 {
    pub execution_id: Uuid,
    pub task_id: Uuid,
    pub language: Language,
    pub lane: Lane,
    /// The program's main source file.
    pub code: String,
    /// Further files of the program, placed beside the main file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<SourceFile>,
    /// What the program reads on its standard input.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdin: String,
    /// Wall-clock limit, enforced by the worker.
    pub timeout_seconds: u32,
    /// Limits the task asked for; absent ones take the worker's defaults.
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Whether the task asked for network access (granted only where the deployment allows it).
    #[serde(default)]
    pub network: bool,
    /// Whether and how a failing program is run again (fleet failures are redelivered anyway).
    #[serde(default, skip_serializing_if = "RetryPolicy::is_never")]
    pub retry: RetryPolicy,
    pub submitted_at: DateTime<Utc>,
    /// The capability of the execution's dispatch: the api gives it to the workers in the
    /// dispatch, and accepts `started` events and results only with it. Absent from
    /// dispatches made before tokens existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_token: Option<String>,
}

/// Runs of a program that failed or timed out, after the first; cancelled runs, compile errors
/// and fleet errors are not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub retries: u32,
    /// Delay before the first retry; it doubles for each further one.
    pub backoff_seconds: u32,
}

impl RetryPolicy {
    /// The longest delay between two runs, whatever the policy asks for.
    pub const MAX_BACKOFF_SECONDS: u32 = 300;

    pub fn is_never(&self) -> bool {
        self.retries == 0
    }

    /// The delay before run `next_run` (2 for the first retry).
    pub fn delay_before(&self, next_run: u32) -> std::time::Duration {
        crate::backoff::Backoff::new(
            std::time::Duration::from_secs(u64::from(self.backoff_seconds.max(1))),
            std::time::Duration::from_secs(u64::from(Self::MAX_BACKOFF_SECONDS)),
        )
        .after(next_run.saturating_sub(1))
    }
}

/// A file of a program, by its path relative to the main file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub path: String,
    pub content: String,
}

/// Per-execution limits a task may ask for, within maxima the operator configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    pub memory_mb: Option<u32>,
    /// CPU quota in thousandths of a CPU (500 = half a CPU).
    pub cpu_millis: Option<u32>,
    /// Bytes of stdout and of stderr kept, each.
    pub output_bytes: Option<u64>,
}

/// Progress of a running execution, published on `<p>.events.<execution_id>.<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "schema")]
pub enum ExecutionEvent {
    #[serde(rename = "voidrunner.started.v1")]
    StartedV1(StartedV1),
    #[serde(rename = "voidrunner.output.v1")]
    OutputV1(OutputV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartedV1 {
    pub execution_id: Uuid,
    pub worker_id: String,
    /// 1 for the first delivery of the dispatch, 2 for its first redelivery, ...
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    /// The dispatch's token, as the dispatch carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_token: Option<String>,
}

/// Which output stream of the program a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputV1 {
    pub execution_id: Uuid,
    pub stream: StreamName,
    /// Position of this chunk among the execution's chunks, from 0.
    pub seq: u64,
    pub data: Captured,
}

/// Bytes a program wrote, as text when they are valid UTF-8 and as base64 otherwise, so that
/// binary output survives the JSON round trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Captured {
    pub text: String,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

impl Captured {
    /// The same bytes, base64-encoded (whose JSON size is bounded, unlike escaped text).
    pub fn into_base64(self) -> Self {
        match self.encoding {
            Encoding::Base64 => self,
            Encoding::Utf8 => Captured {
                text: base64_encode(self.text.as_bytes()),
                encoding: Encoding::Base64,
            },
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Captured {
                text: text.to_owned(),
                encoding: Encoding::Utf8,
            },
            Err(_) => Captured {
                text: base64_encode(bytes),
                encoding: Encoding::Base64,
            },
        }
    }
}

/// The final outcome of an execution, published on its reply subject `<p>.results.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "schema")]
pub enum ExecutionResult {
    #[serde(rename = "voidrunner.result.v1")]
    V1(ResultV1),
}

impl ExecutionResult {
    pub fn execution_id(&self) -> Uuid {
        match self {
            ExecutionResult::V1(result) => result.execution_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultV1 {
    pub execution_id: Uuid,
    /// How it ended: one of the final states (`completed`, `failed`, `timeout`, `cancelled`,
    /// `error`); a result with another is refused.
    #[schemars(schema_with = "final_status")]
    pub status: Status,
    /// The program's exit code; absent when it never ran or was killed before exiting.
    pub exit_code: Option<i64>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// True when stdout or stderr passed the output cap and the rest was dropped.
    pub output_truncated: bool,
    /// Which of the two did.
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    pub oom_killed: bool,
    /// The program did not compile (compiled languages); the compiler's report is in stderr.
    #[serde(default)]
    pub compile_error: bool,
    /// Peak memory of the sandbox, when the sandbox could measure it.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// What went wrong, for `error` (and for `failed` when the sandbox knows why).
    pub error: Option<String>,
    pub worker_id: String,
    pub attempt: u32,
    /// How many times the program ran for this result, retries included.
    #[serde(default = "one_run")]
    pub runs: u32,
    /// The fleet gave up on it: the dispatch is in the DLQ.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_lettered: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// The dispatch's token, as the dispatch carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_token: Option<String>,
}

/// Results carry only the final states of `Status`.
fn final_status(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let finals: Vec<&str> = Status::FINAL.iter().map(|status| status.as_str()).collect();
    schemars::json_schema!({
        "type": "string",
        "enum": finals,
    })
}

fn one_run() -> u32 {
    1
}

impl ResultV1 {
    /// The result of an execution the fleet did not run, or gave up on, for `reason`.
    pub fn fleet_error(execution_id: Uuid, worker_id: &str, attempt: u32, reason: String) -> Self {
        ResultV1 {
            execution_id,
            status: Status::Error,
            exit_code: None,
            stdout: Captured::default(),
            stderr: Captured::default(),
            output_truncated: false,
            stdout_truncated: false,
            stderr_truncated: false,
            oom_killed: false,
            compile_error: false,
            peak_memory_bytes: None,
            error: Some(reason),
            worker_id: worker_id.to_owned(),
            attempt,
            runs: 0,
            dead_lettered: false,
            started_at: None,
            finished_at: Utc::now(),
            dispatch_token: None,
        }
    }
}

/// An execution the fleet gave up on, published on `<p>.dlq.<lane>.<language>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "schema")]
pub enum DeadLetter {
    #[serde(rename = "voidrunner.dead_letter.v1")]
    V1(DeadLetterV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterV1 {
    pub dispatch: DispatchV1,
    pub reason: String,
    pub attempts: u32,
    pub worker_id: String,
    pub failed_at: DateTime<Utc>,
}

/// A worker's heartbeat (the value under its id in the `<P>_workers` bucket) and its answer on
/// `<p>.workers.<id>.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "schema")]
pub enum WorkerStatus {
    #[serde(rename = "voidrunner.worker_status.v1")]
    V1(WorkerStatusV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerStatusV1 {
    pub worker_id: String,
    pub host: String,
    pub version: String,
    /// Executions it runs at once.
    pub slots: u32,
    /// Of those, the ones running now.
    pub busy: u32,
    /// Languages whose image this worker has.
    pub languages: Vec<Language>,
    /// Warm sandboxes waiting, per language.
    pub warm_pool: std::collections::BTreeMap<String, u32>,
    pub sandbox: SandboxCounters,
    /// Told to stop: it takes no more work and finishes what it runs.
    #[serde(default)]
    pub draining: bool,
    /// What runs its executions: `docker`, or `instant` (runs nothing: load tests only).
    #[serde(default)]
    pub backend: SandboxBackendKind,
    pub seen_at: DateTime<Utc>,
}

/// The kinds of sandbox a worker can run executions in (`VOIDRUNNER_SANDBOX_BACKEND`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SandboxBackendKind {
    /// A hardened, single-use container on the Docker engine.
    #[default]
    Docker,
    /// The same containment without a daemon: namespaces, cgroups and seccomp of its own per
    /// execution, through an OCI runtime (crun) the worker drives directly.
    Native,
    /// Runs no code: answers each execution at once with exit 0 and no output, saying so in
    /// its `error`. For load tests of the control plane; never for real work.
    Instant,
}

impl SandboxBackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxBackendKind::Docker => "docker",
            SandboxBackendKind::Native => "native",
            SandboxBackendKind::Instant => "instant",
        }
    }
}

/// Counters of a worker's sandbox runtime since it started.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct SandboxCounters {
    /// Executions that ran in a warm container.
    pub warm_hits: u64,
    /// Executions that ran in a container created for them.
    pub cold_starts: u64,
    /// Of the cold starts, those whose language has a pool that was empty at the time.
    pub pool_empty: u64,
    pub containers_created: u64,
    pub containers_removed: u64,
    pub orphans_removed: u64,
}

/// The JSON Schema of every event, by file name under `nats/schemas/`.
pub fn json_schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("dispatch.json", draft07_schema::<Dispatch>()),
        ("execution-event.json", draft07_schema::<ExecutionEvent>()),
        ("result.json", draft07_schema::<ExecutionResult>()),
        ("dead-letter.json", draft07_schema::<DeadLetter>()),
        ("worker-status.json", draft07_schema::<WorkerStatus>()),
    ]
}

/// The committed schemas are draft-07, as their consumers validate them; schemars 1 defaults to
/// 2020-12.
fn draft07_schema<T: JsonSchema>() -> schemars::Schema {
    schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>()
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_output_is_carried_as_base64() {
        let captured = Captured::from_bytes(&[0xff, 0xfe, b'a']);
        assert_eq!(captured.encoding, Encoding::Base64);
        assert_eq!(captured.text, "//5h");
        assert_eq!(Captured::from_bytes(b"ab").text, "ab");
    }

    #[test]
    fn base64_pads_like_rfc_4648() {
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_dispatch_names_its_schema_version_on_the_wire() {
        let dispatch = Dispatch::V1(DispatchV1 {
            execution_id: Uuid::nil(),
            task_id: Uuid::nil(),
            language: "python".parse().expect("in the catalog"),
            lane: Lane::Normal,
            code: "print(1)".into(),
            files: Vec::new(),
            stdin: String::new(),
            timeout_seconds: 5,
            limits: RequestedLimits::default(),
            network: false,
            retry: RetryPolicy::default(),
            submitted_at: Utc::now(),
            dispatch_token: None,
        });
        let json = serde_json::to_value(&dispatch).expect("serialises");
        assert_eq!(json["schema"], "voidrunner.dispatch.v1");
        assert_eq!(json["language"], "python");
        let back: Dispatch = serde_json::from_value(json).expect("round-trips");
        assert_eq!(back, dispatch);
    }

    #[test]
    fn retry_delays_double_from_the_backoff_and_level_off() {
        let policy = RetryPolicy {
            retries: 20,
            backoff_seconds: 2,
        };
        let delays: Vec<u64> = (2..=10)
            .map(|run| policy.delay_before(run).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300]);
    }
}
