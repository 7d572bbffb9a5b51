//! From a task request to a valid task: every rule a task's fields must keep.

use std::sync::Arc;

use sea_orm::Set;
use serde::{Deserialize, Serialize};
use voidrunner_shared::config::SandboxPolicy;
use voidrunner_shared::events::{RequestedLimits, RetryPolicy, SourceFile};
use voidrunner_shared::{Lane, Language};

use crate::entity::task;
use crate::rules::{self, Range};

const DEFAULT_PRIORITY: i64 = 5;
const MIN_MEMORY_MB: i64 = 16;
const MIN_CPUS: f64 = 0.01;
const MIN_OUTPUT_LIMIT_BYTES: u64 = 1024;
const DEFAULT_RETRY_BACKOFF_SECONDS: i64 = 1;

/// A task as a client describes it: `POST /tasks`, and the merged result of a `PATCH`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDraft {
    pub name: String,
    /// The main file; with `files`, at most the deployment's program size in bytes.
    pub script_content: String,
    /// python, javascript, bash or go (aliases: py, js, node, sh, golang).
    #[schema(example = "python")]
    pub script_type: String,
    pub description: Option<String>,
    /// Any JSON object of the user's, at most 16 KiB.
    pub metadata: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    pub priority: Option<i64>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    pub timeout_seconds: Option<i64>,
    pub files: Option<Vec<SourceFile>>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    pub memory_mb: Option<i64>,
    pub cpus: Option<f64>,
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    pub output_limit_bytes: Option<u64>,
    pub network: Option<bool>,
    /// Runs after the first when the program fails or times out.
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
    pub max_retries: Option<i64>,
    /// Delay before the first retry, doubling for each further one.
    #[serde(default, deserialize_with = "crate::whole_number::optional")]
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
        let limits = parse_limits(&draft, rules)?;
        let network = draft.network.unwrap_or(false);
        if network && !rules.policy.network_allowed() {
            return refuse(
                Field::Network,
                "network access is disabled in this deployment (VOIDRUNNER_SANDBOX_NETWORK=none)",
            );
        }
        let priority = parse_priority(draft.priority, rules)?;
        let timeout_seconds = parse_timeout(draft.timeout_seconds, language, rules)?;
        let retry = parse_retry(draft.max_retries, draft.retry_backoff_seconds, rules)?;
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
    rules::TASK_NAME
        .check(name)
        .or_else(|problem| refuse(Field::Name, problem))?;
    Ok(name.trim_matches(rules::is_blank).to_owned())
}

fn parse_description(description: Option<String>) -> Result<Option<String>, FieldError> {
    let Some(description) = description else {
        return Ok(None);
    };
    rules::DESCRIPTION
        .check(&description)
        .or_else(|problem| refuse(Field::Description, problem))?;
    let description = description.trim_matches(rules::is_blank);
    Ok((!description.is_empty()).then(|| description.to_owned()))
}

fn parse_metadata(
    metadata: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, FieldError> {
    match metadata {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => {
            let size = value.to_string().len();
            if size > rules::MAX_METADATA_BYTES {
                return refuse(
                    Field::Metadata,
                    format!(
                        "is {size} bytes as JSON; the limit is {}",
                        rules::MAX_METADATA_BYTES
                    ),
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

/// The program's further files, written in order: a later file with the same path replaces
/// an earlier one (as unpacking them one after another would), and none may take the main
/// file's name.
fn parse_files(files: Vec<SourceFile>, main_file: &str) -> Result<Vec<SourceFile>, FieldError> {
    if files.len() > rules::MAX_FILES {
        return refuse(
            Field::Files,
            format!("at most {} files, got {}", rules::MAX_FILES, files.len()),
        );
    }
    for file in &files {
        if let Err(problem) = rules::FILE_PATH.check(&file.path) {
            return refuse(Field::Files, format!("path {:?} {problem}", file.path));
        }
        if file.path == main_file {
            return refuse(
                Field::Files,
                format!("path {main_file:?} is the main file's: give it as the code instead"),
            );
        }
    }
    let mut kept: Vec<SourceFile> = Vec::with_capacity(files.len());
    for file in files {
        kept.retain(|earlier| earlier.path != file.path);
        kept.push(file);
    }
    Ok(kept)
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

impl TaskRules {
    pub fn memory_mb(&self) -> Range<i64> {
        Range {
            min: MIN_MEMORY_MB,
            max: i64::from(self.policy.sandbox_max_memory_mb),
        }
    }

    pub fn cpus(&self) -> Range<f64> {
        Range {
            min: MIN_CPUS,
            max: self.policy.sandbox_max_cpus,
        }
    }

    pub fn output_limit_bytes(&self) -> Range<u64> {
        Range {
            min: MIN_OUTPUT_LIMIT_BYTES,
            max: self.policy.sandbox_max_output_limit_bytes,
        }
    }

    pub fn priority(&self) -> Range<i64> {
        Range {
            min: 0,
            max: i64::from(Lane::MAX_PRIORITY),
        }
    }

    pub fn timeout_seconds(&self) -> Range<i64> {
        Range {
            min: 1,
            max: i64::from(self.max_timeout_seconds),
        }
    }

    pub fn retry_backoff_seconds(&self) -> Range<i64> {
        Range {
            min: 1,
            max: i64::from(RetryPolicy::MAX_BACKOFF_SECONDS),
        }
    }

    /// Each field's rules as JSON Schema keywords, for the OpenAPI document: the same rules
    /// `TaskSpec::parse` enforces under this deployment's limits.
    pub fn documented(&self, naming: Naming) -> Vec<(&'static str, serde_json::Value)> {
        let languages: Vec<&str> = Language::names().collect();
        let mut fields = vec![
            (Field::Name, rules::TASK_NAME.schema()),
            (Field::Language, serde_json::json!({ "enum": languages })),
            (
                Field::Code,
                serde_json::json!({ "minLength": 1, "maxLength": self.max_script_bytes }),
            ),
            (Field::Description, rules::DESCRIPTION.schema()),
            (
                Field::Metadata,
                serde_json::json!({ "type": ["object", "null"] }),
            ),
            (
                Field::Files,
                serde_json::json!({ "maxItems": rules::MAX_FILES }),
            ),
            (Field::MemoryMb, self.memory_mb().schema()),
            (Field::Cpus, self.cpus().schema()),
            (Field::OutputLimitBytes, self.output_limit_bytes().schema()),
            (Field::Priority, self.priority().schema()),
            (Field::TimeoutSeconds, self.timeout_seconds().schema()),
            (Field::MaxRetries, rules::RETRIES.schema()),
            (
                Field::RetryBackoffSeconds,
                self.retry_backoff_seconds().schema(),
            ),
        ];
        if !self.policy.network_allowed() {
            fields.push((Field::Network, serde_json::json!({ "const": false })));
        }
        fields
            .into_iter()
            .map(|(field, schema)| (field.name(naming), schema))
            .collect()
    }
}

fn parse_limits(draft: &TaskDraft, rules: &TaskRules) -> Result<RequestedLimits, FieldError> {
    if let Some(mb) = draft.memory_mb {
        rules
            .memory_mb()
            .check(mb)
            .or_else(|problem| refuse(Field::MemoryMb, problem))?;
    }
    if let Some(cpus) = draft.cpus {
        rules
            .cpus()
            .check(cpus)
            .or_else(|problem| refuse(Field::Cpus, problem))?;
    }
    if let Some(bytes) = draft.output_limit_bytes {
        rules
            .output_limit_bytes()
            .check(bytes)
            .or_else(|problem| refuse(Field::OutputLimitBytes, problem))?;
    }
    Ok(RequestedLimits {
        memory_mb: draft.memory_mb.and_then(|mb| u32::try_from(mb).ok()),
        cpu_millis: draft.cpus.map(|cpus| (cpus * 1000.0).round() as u32),
        output_bytes: draft.output_limit_bytes,
    })
}

fn parse_priority(priority: Option<i64>, rules: &TaskRules) -> Result<i16, FieldError> {
    let priority = priority.unwrap_or(DEFAULT_PRIORITY);
    rules
        .priority()
        .check(priority)
        .or_else(|problem| refuse(Field::Priority, problem))?;
    Ok(i16::try_from(priority).unwrap_or(0))
}

/// The timeout asked for; else the language's own default (compilers need longer) or the
/// installation's, whichever is longer, within the installation's maximum.
fn parse_timeout(
    timeout: Option<i64>,
    language: Language,
    rules: &TaskRules,
) -> Result<i32, FieldError> {
    let timeout = timeout.unwrap_or_else(|| {
        let default = rules
            .default_timeout_seconds
            .max(language.definition().timeout_seconds.unwrap_or(0))
            .min(rules.max_timeout_seconds);
        i64::from(default)
    });
    rules
        .timeout_seconds()
        .check(timeout)
        .or_else(|problem| refuse(Field::TimeoutSeconds, problem))?;
    Ok(i32::try_from(timeout).unwrap_or(1))
}

fn parse_retry(
    max_retries: Option<i64>,
    backoff_seconds: Option<i64>,
    rules: &TaskRules,
) -> Result<RetryPolicy, FieldError> {
    let retries = max_retries.unwrap_or(0);
    rules::RETRIES
        .check(retries)
        .or_else(|problem| refuse(Field::MaxRetries, problem))?;
    let backoff = backoff_seconds.unwrap_or(DEFAULT_RETRY_BACKOFF_SECONDS);
    rules
        .retry_backoff_seconds()
        .check(backoff)
        .or_else(|problem| refuse(Field::RetryBackoffSeconds, problem))?;
    Ok(RetryPolicy {
        retries: u32::try_from(retries).unwrap_or(0),
        backoff_seconds: u32::try_from(backoff).unwrap_or(1),
    })
}
