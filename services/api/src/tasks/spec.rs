//! From a task request to a valid task: every rule a task's fields must keep.

use std::sync::Arc;

use sea_orm::Set;
use serde::{Deserialize, Serialize};
use voidrunner_shared::config::SandboxPolicy;
use voidrunner_shared::events::{RequestedLimits, RetryPolicy, SourceFile};
use voidrunner_shared::{Lane, Language};

use crate::entity::task;

const MAX_NAME_CHARS: usize = 255;
const DEFAULT_PRIORITY: i64 = 5;
const MAX_FILES: usize = 32;
const MAX_PATH_CHARS: usize = 128;
const MIN_MEMORY_MB: i64 = 16;
const MIN_CPUS: f64 = 0.01;
const MIN_OUTPUT_LIMIT_BYTES: u64 = 1024;
const MAX_RETRIES: i64 = 10;
const DEFAULT_RETRY_BACKOFF_SECONDS: i64 = 1;
const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A task as a client describes it: `POST /tasks`, and the merged result of a `PATCH`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDraft {
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// The main file, 1 byte to 64 KiB with `files`.
    #[schema(min_length = 1, max_length = 65536)]
    pub script_content: String,
    /// python, javascript, bash or go (aliases: py, js, node, sh, golang).
    #[schema(example = "python")]
    pub script_type: String,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Any JSON object of the user's, at most 16 KiB.
    pub metadata: Option<serde_json::Value>,
    #[schema(minimum = 0, maximum = 10)]
    pub priority: Option<i64>,
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_seconds: Option<i64>,
    pub files: Option<Vec<SourceFile>>,
    pub memory_mb: Option<i64>,
    pub cpus: Option<f64>,
    pub output_limit_bytes: Option<u64>,
    pub network: Option<bool>,
    /// Runs after the first when the program fails or times out.
    pub max_retries: Option<i64>,
    /// Delay before the first retry, doubling for each further one.
    pub retry_backoff_seconds: Option<i64>,
}

/// The deployment's limits a task is checked against.
#[derive(Debug, Clone)]
pub struct TaskRules {
    pub policy: Arc<SandboxPolicy>,
    pub max_script_bytes: usize,
    pub default_timeout_seconds: u32,
    pub max_timeout_seconds: u32,
}

/// The fields a rule can refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Language,
    Code,
    Description,
    Metadata,
    Files,
    MemoryMb,
    Cpus,
    OutputLimitBytes,
    Network,
    Priority,
    TimeoutSeconds,
    MaxRetries,
    RetryBackoffSeconds,
}

/// How a request names its fields: tasks say `script_type` and `script_content`, runs say
/// `language` and `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Task,
    Run,
}

impl Field {
    pub fn name(self, naming: Naming) -> &'static str {
        match (self, naming) {
            (Field::Language, Naming::Task) => "script_type",
            (Field::Language, Naming::Run) => "language",
            (Field::Code, Naming::Task) => "script_content",
            (Field::Code, Naming::Run) => "code",
            (Field::Name, _) => "name",
            (Field::Description, _) => "description",
            (Field::Metadata, _) => "metadata",
            (Field::Files, _) => "files",
            (Field::MemoryMb, _) => "memory_mb",
            (Field::Cpus, _) => "cpus",
            (Field::OutputLimitBytes, _) => "output_limit_bytes",
            (Field::Network, _) => "network",
            (Field::Priority, _) => "priority",
            (Field::TimeoutSeconds, _) => "timeout_seconds",
            (Field::MaxRetries, _) => "max_retries",
            (Field::RetryBackoffSeconds, _) => "retry_backoff_seconds",
        }
    }
}

/// A field that broke a rule, and the rule, said so that the client can fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field:?}: {problem}")]
pub struct FieldError {
    pub field: Field,
    pub problem: String,
}

fn refuse<T>(field: Field, problem: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        field,
        problem: problem.into(),
    })
}

/// A task that keeps every rule; only `TaskSpec::parse` makes one.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    name: String,
    description: Option<String>,
    metadata: Option<serde_json::Value>,
    language: Language,
    script_content: String,
    priority: i16,
    timeout_seconds: i32,
    files: Vec<SourceFile>,
    limits: RequestedLimits,
    network: bool,
    retry: RetryPolicy,
}

impl TaskSpec {
    /// Checks `draft` against `rules`, field by field in the order a form shows them.
    pub fn parse(mut draft: TaskDraft, rules: &TaskRules) -> Result<TaskSpec, FieldError> {
        let name = parse_name(&draft.name)?;
        let language: Language = draft.script_type.parse().or_else(
            |e: voidrunner_shared::language::UnknownLanguage| {
                refuse(Field::Language, e.to_string())
            },
        )?;
        if draft.script_content.is_empty() {
            return refuse(Field::Code, "must not be empty");
        }
        let description = parse_description(draft.description.take())?;
        let metadata = parse_metadata(draft.metadata.take())?;
        let files = parse_files(draft.files.take().unwrap_or_default(), language.main_file())?;
        check_program_size(&draft.script_content, &files, rules.max_script_bytes)?;
        let limits = parse_limits(&draft, &rules.policy)?;
        let network = draft.network.unwrap_or(false);
        if network && !rules.policy.network_allowed() {
            return refuse(
                Field::Network,
                "network access is disabled in this deployment (VOIDRUNNER_SANDBOX_NETWORK=none)",
            );
        }
        let priority = parse_priority(draft.priority)?;
        let timeout_seconds = parse_timeout(draft.timeout_seconds, rules)?;
        let retry = parse_retry(draft.max_retries, draft.retry_backoff_seconds)?;
        Ok(TaskSpec {
            name,
            description,
            metadata,
            language,
            script_content: draft.script_content,
            priority,
            timeout_seconds,
            files,
            limits,
            network,
            retry,
        })
    }

    pub fn language(&self) -> Language {
        self.language
    }

    pub fn script_content(&self) -> &str {
        &self.script_content
    }

    /// The columns a valid task sets, on `model`.
    pub(super) fn apply(self, model: &mut task::ActiveModel) {
        model.name = Set(self.name);
        model.description = Set(self.description);
        model.metadata = Set(self.metadata);
        model.script_type = Set(self.language);
        model.script_content = Set(self.script_content);
        model.priority = Set(self.priority);
        model.timeout_seconds = Set(self.timeout_seconds);
        model.files = Set((!self.files.is_empty()).then(|| task::files_json(&self.files)));
        model.memory_mb = Set(self.limits.memory_mb.and_then(|mb| i32::try_from(mb).ok()));
        model.cpu_millis = Set(self
            .limits
            .cpu_millis
            .and_then(|millis| i32::try_from(millis).ok()));
        model.output_limit_bytes = Set(self
            .limits
            .output_bytes
            .and_then(|bytes| i64::try_from(bytes).ok()));
        model.network = Set(self.network);
        model.max_retries = Set(i32::try_from(self.retry.retries).unwrap_or(0));
        model.retry_backoff_seconds = Set(i32::try_from(self.retry.backoff_seconds).unwrap_or(1));
    }
}

impl TaskDraft {
    /// A stored task as a draft, for merging a partial update onto.
    pub fn of(task: &task::Model) -> TaskDraft {
        TaskDraft {
            name: task.name.clone(),
            script_content: task.script_content.clone(),
            script_type: task.script_type.to_string(),
            description: task.description.clone(),
            metadata: task.metadata.clone(),
            priority: Some(i64::from(task.priority)),
            timeout_seconds: Some(i64::from(task.timeout_seconds)),
            files: Some(task.files()).filter(|files| !files.is_empty()),
            memory_mb: task.memory_mb.map(i64::from),
            cpus: task.cpu_millis.map(|millis| f64::from(millis) / 1000.0),
            output_limit_bytes: task
                .output_limit_bytes
                .and_then(|bytes| u64::try_from(bytes).ok()),
            network: Some(task.network),
            max_retries: Some(i64::from(task.max_retries)),
            retry_backoff_seconds: Some(i64::from(task.retry_backoff_seconds)),
        }
    }
}

fn parse_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return refuse(
            Field::Name,
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        );
    }
    Ok(name.to_owned())
}

fn parse_description(description: Option<String>) -> Result<Option<String>, FieldError> {
    let description = description
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    if description
        .as_ref()
        .is_some_and(|text| text.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return refuse(
            Field::Description,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
    Ok(description)
}

fn parse_metadata(
    metadata: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, FieldError> {
    match metadata {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => {
            let size = value.to_string().len();
            if size > MAX_METADATA_BYTES {
                return refuse(
                    Field::Metadata,
                    format!("is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"),
                );
            }
            Ok(Some(value))
        }
        Some(_) => refuse(
            Field::Metadata,
            "must be a JSON object, like {\"team\": \"search\"}",
        ),
    }
}

/// A relative path inside the work directory: no `..`, no absolute paths, plain characters.
fn valid_file_path(path: &str) -> bool {
    !path.is_empty()
        && path.chars().count() <= MAX_PATH_CHARS
        && !path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn parse_files(files: Vec<SourceFile>, main_file: &str) -> Result<Vec<SourceFile>, FieldError> {
    if files.len() > MAX_FILES {
        return refuse(
            Field::Files,
            format!("at most {MAX_FILES} files, got {}", files.len()),
        );
    }
    let mut seen = std::collections::HashSet::from([main_file.to_owned()]);
    for file in &files {
        if !valid_file_path(&file.path) {
            return refuse(
                Field::Files,
                format!(
                    "path {:?} must be relative, at most {MAX_PATH_CHARS} characters from A-Z a-z 0-9 . _ - /, without . or .. parts",
                    file.path
                ),
            );
        }
        if !seen.insert(file.path.clone()) {
            return refuse(
                Field::Files,
                format!(
                    "path {:?} appears twice (or is the main file, {main_file})",
                    file.path
                ),
            );
        }
    }
    Ok(files)
}

fn check_program_size(
    main: &str,
    files: &[SourceFile],
    max_bytes: usize,
) -> Result<(), FieldError> {
    let program_bytes = main.len() + files.iter().map(|file| file.content.len()).sum::<usize>();
    if program_bytes > max_bytes {
        return refuse(
            Field::Code,
            format!("the program, main file and files together, is {program_bytes} bytes; the limit is {max_bytes}"),
        );
    }
    Ok(())
}

fn parse_limits(draft: &TaskDraft, policy: &SandboxPolicy) -> Result<RequestedLimits, FieldError> {
    let memory_mb = match draft.memory_mb {
        Some(mb) if !(MIN_MEMORY_MB..=i64::from(policy.sandbox_max_memory_mb)).contains(&mb) => {
            return refuse(
                Field::MemoryMb,
                format!(
                    "must be between {MIN_MEMORY_MB} and {}, got {mb}",
                    policy.sandbox_max_memory_mb
                ),
            )
        }
        mb => mb.and_then(|mb| u32::try_from(mb).ok()),
    };
    let cpu_millis = match draft.cpus {
        Some(cpus) if !(MIN_CPUS..=policy.sandbox_max_cpus).contains(&cpus) => {
            return refuse(
                Field::Cpus,
                format!(
                    "must be between {MIN_CPUS} and {}, got {cpus}",
                    policy.sandbox_max_cpus
                ),
            )
        }
        cpus => cpus.map(|cpus| (cpus * 1000.0).round() as u32),
    };
    let max_output = policy.sandbox_max_output_limit_bytes;
    let output_bytes = match draft.output_limit_bytes {
        Some(bytes) if !(MIN_OUTPUT_LIMIT_BYTES..=max_output).contains(&bytes) => {
            return refuse(
                Field::OutputLimitBytes,
                format!("must be between {MIN_OUTPUT_LIMIT_BYTES} and {max_output}, got {bytes}"),
            )
        }
        bytes => bytes,
    };
    Ok(RequestedLimits {
        memory_mb,
        cpu_millis,
        output_bytes,
    })
}

fn parse_priority(priority: Option<i64>) -> Result<i16, FieldError> {
    let priority = priority.unwrap_or(DEFAULT_PRIORITY);
    if !(0..=i64::from(Lane::MAX_PRIORITY)).contains(&priority) {
        return refuse(
            Field::Priority,
            format!(
                "must be between 0 and {}, got {priority}",
                Lane::MAX_PRIORITY
            ),
        );
    }
    Ok(i16::try_from(priority).unwrap_or(0))
}

fn parse_timeout(timeout: Option<i64>, rules: &TaskRules) -> Result<i32, FieldError> {
    let max_timeout = rules.max_timeout_seconds;
    let timeout = timeout.unwrap_or(i64::from(rules.default_timeout_seconds));
    if !(1..=i64::from(max_timeout)).contains(&timeout) {
        return refuse(
            Field::TimeoutSeconds,
            format!("must be between 1 and {max_timeout}, got {timeout}"),
        );
    }
    Ok(i32::try_from(timeout).unwrap_or(1))
}

fn parse_retry(
    max_retries: Option<i64>,
    backoff_seconds: Option<i64>,
) -> Result<RetryPolicy, FieldError> {
    let retries = max_retries.unwrap_or(0);
    if !(0..=MAX_RETRIES).contains(&retries) {
        return refuse(
            Field::MaxRetries,
            format!("must be between 0 and {MAX_RETRIES}, got {retries}"),
        );
    }
    let max_backoff = i64::from(RetryPolicy::MAX_BACKOFF_SECONDS);
    let backoff = backoff_seconds.unwrap_or(DEFAULT_RETRY_BACKOFF_SECONDS);
    if !(1..=max_backoff).contains(&backoff) {
        return refuse(
            Field::RetryBackoffSeconds,
            format!("must be between 1 and {max_backoff}, got {backoff}"),
        );
    }
    Ok(RetryPolicy {
        retries: u32::try_from(retries).unwrap_or(0),
        backoff_seconds: u32::try_from(backoff).unwrap_or(1),
    })
}
