//! The OpenAPI 3.1 document, generated from the handlers' annotations: `/openapi.json` (the
//! reference page that renders it is [`crate::docs`]).

use serde::Serialize;
use serde_json::{json, Value};
use voidrunner_shared::status::TaskStatus;
use voidrunner_shared::{Language, Status};

use crate::pagination;
use crate::rules;
use crate::state::AppState;
use crate::tasks::Naming;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `validation_failed`, `not_found`, `rate_limited`, ...
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// For validation errors, `{"field", "problem"}` (and `index` in a batch); otherwise null.
    pub details: Option<serde_json::Value>,
}

/// Answers any authenticated endpoint may give.
#[derive(IntoResponses)]
pub enum Common {
    /// Missing, invalid or expired credentials.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Too many requests (`rate_limited`; `Retry-After` says when to try again), or too many
    /// live-output streams open (`too_many_streams`).
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The database or NATS is unreachable, or the request took too long; nothing was changed.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// A bug; the body reveals nothing, the log has the cause.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// Answers any endpoint without credentials may give.
#[derive(IntoResponses)]
pub enum Public {
    /// Too many requests from this address.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The database is unreachable; nothing was changed.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// A bug; the body reveals nothing, the log has the cause.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// A malformed request: bad JSON, a path id that is not a UUID, a bad query parameter.
#[derive(IntoResponses)]
pub enum Malformed {
    /// Bad JSON, a path id that is not a UUID, or a bad query parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// Answers about a JSON body.
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// The body is larger than the configured limits allow.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not sent as `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// A field breaks a rule; `details.field` names it.
    #[response(status = 422)]
    Invalid(ErrorBody),
}

/// The resource does not exist, or belongs to someone else.
#[derive(IntoResponses)]
pub enum Missing {
    /// The resource does not exist, or belongs to someone else.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The resource's state forbids the change.
#[derive(IntoResponses)]
pub enum Conflict {
    /// The resource's state forbids the change.
    #[response(status = 409)]
    Conflict(ErrorBody),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token, or an API key (vrk_...)")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "VoidRunner",
        description = "Runs untrusted code in hardened, single-use sandboxes. Every error has the shape `{\"error\": {\"code\", \"message\", \"details\"}}`.",
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Accounts, sessions and API keys"),
        (name = "tasks", description = "Stored programs"),
        (name = "executions", description = "Runs of tasks, their output and cancellation"),
        (name = "runs", description = "One-shot runs, no task needed"),
        (name = "fleet", description = "Workers and service health"),
    )
)]
pub struct ApiDoc;

/// The document as this deployment serves it: the handlers' annotations, with every rule the
/// validators enforce under this configuration stated on the field or parameter it governs.
pub fn served(doc: &utoipa::openapi::OpenApi, state: &AppState) -> Value {
    let mut doc = serde_json::to_value(doc).expect("the document is JSON");
    let rules = state.task_rules();
    let schemas = &mut doc["components"]["schemas"];
    // A patch clears an optional field with null; these three it can only replace.
    for field in ["name", "script_content", "script_type"] {
        schemas["TaskPatch"]["properties"][field] = json!({ "type": "string" });
    }
    schemas["RunRequest"]["properties"]["code"] = json!({
        "type": "string",
        "description": "The main file. (The api also takes a run without it whose `files` hold the language's main file.)",
    });
    let mut constrain = |schema: &str, fields: Vec<(&str, Value)>| {
        for (field, keywords) in fields {
            let property = &mut schemas[schema]["properties"][field];
            assert!(
                property.is_object(),
                "{schema}.{field} is not in the document"
            );
            merge(property, keywords);
        }
    };
    constrain("TaskDraft", rules.documented(Naming::Task));
    constrain("TaskPatch", rules.documented(Naming::Task));
    let mut run = rules.documented(Naming::Run);
    run.retain(|(field, _)| {
        !matches!(
            *field,
            "name" | "description" | "metadata" | "max_retries" | "retry_backoff_seconds"
        )
    });
    let stdin = json!({ "maxLength": state.config.max_stdin_bytes });
    let callback_url = || {
        let mut keywords = rules::CALLBACK_URL.schema();
        if !state.config.webhook_allow_private {
            keywords["description"] = json!("Where to POST the result when it ends (signed; see the README). Loopback and private addresses are refused in this deployment (VOIDRUNNER_WEBHOOK_ALLOW_PRIVATE).");
        }
        keywords
    };
    run.extend([("stdin", stdin.clone()), ("callback_url", callback_url())]);
    constrain("RunRequest", run);
    constrain(
        "StartExecution",
        vec![("stdin", stdin), ("callback_url", callback_url())],
    );
    let mut path = rules::FILE_PATH.schema();
    path["description"] = json!("Relative to the main file's directory. Files are written in order: a later file with the same path replaces an earlier one; none may be the language's main file (main.py, main.js, main.sh, main.go).");
    constrain("SourceFile", vec![("path", path)]);
    constrain(
        "BatchRequest",
        vec![(
            "runs",
            json!({ "minItems": rules::BATCH_RUNS.min, "maxItems": rules::BATCH_RUNS.max }),
        )],
    );
    constrain(
        "Credentials",
        vec![
            ("email", rules::EMAIL.schema()),
            ("password", rules::PASSWORD.schema()),
        ],
    );
    constrain("NewApiKey", vec![("name", rules::API_KEY_NAME.schema())]);
    // The api also takes a run whose `files` hold the language's main file instead of `code`;
    // the document asks for `code`, the one form a schema can state exactly.
    schemas["RunRequest"]["required"] = json!(["language", "code"]);
    schemas["TaskPatch"]["additionalProperties"] = json!(false);

    if state.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        refuse_nul(&mut doc["components"]["schemas"]);
    }

    let languages: Vec<&str> = Language::names().collect();
    let statuses: Vec<&str> = Status::ALL.iter().map(|status| status.as_str()).collect();
    let task_statuses: Vec<&str> = TaskStatus::all().map(TaskStatus::as_str).collect();
    let parameters = |path: &str, name: &str| -> Option<Value> {
        Some(match name {
            "limit" => json!({ "minimum": 1, "maximum": pagination::MAX_PAGE }),
            "wait_seconds" => json!({ "minimum": 1, "maximum": state.config.max_wait_seconds() }),
            "script_type" => json!({ "enum": languages }),
            "status" if path.ends_with("/tasks") => json!({ "enum": task_statuses }),
            "status" => json!({ "enum": statuses }),
            _ => return None,
        })
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let operations = item
                .as_object_mut()
                .into_iter()
                .flat_map(|item| item.values_mut());
            for operation in operations {
                let listed = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten();
                for parameter in listed {
                    let name = parameter["name"].as_str().unwrap_or_default().to_owned();
                    if let Some(keywords) = parameters(path, &name) {
                        merge(&mut parameter["schema"], keywords);
                    }
                }
            }
        }
    }
    doc
}

/// The request bodies' schemas.
const REQUESTS: [&str; 9] = [
    "TaskDraft",
    "TaskPatch",
    "RunRequest",
    "StartExecution",
    "SourceFile",
    "BatchRequest",
    "Credentials",
    "NewApiKey",
    "RefreshRequest",
];

/// PostgreSQL cannot store U+0000 in text: on it, the request bodies' strings may not hold
/// one, and say so (the rules' own patterns exclude it already).
fn refuse_nul(schemas: &mut Value) {
    for name in REQUESTS {
        let Some(properties) = schemas[name]["properties"].as_object_mut() else {
            continue;
        };
        // A password is hashed, never stored: it may hold anything.
        let stored = properties
            .iter_mut()
            .filter(|(name, _)| name.as_str() != "password");
        for (_, property) in stored {
            let value = match property.get_mut("anyOf").and_then(Value::as_array_mut) {
                Some(branches) => &mut branches[0],
                None => property,
            };
            if value["type"] == json!("string")
                && value.get("pattern").is_none()
                && value.get("enum").is_none()
            {
                value["pattern"] = json!(rules::NO_NUL);
            }
        }
    }
    schemas["TaskDraft"]["properties"]["metadata"]["description"] =
        json!("Any JSON object of the user's, at most 16 KiB, whose strings hold no U+0000.");
}

/// `keywords` set on `schema`, over what it had. On a nullable scalar (`type: [T, "null"]`)
/// they go on the non-null branch of an `anyOf`, where generators read them as bounds of the
/// value rather than of its type.
fn merge(schema: &mut Value, keywords: Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let Value::Object(keywords) = keywords else {
        return;
    };
    let nullable_type = match object.get("type") {
        Some(Value::Array(types)) if types.len() == 2 && types.contains(&json!("null")) => {
            types.iter().find(|kind| **kind != json!("null")).cloned()
        }
        _ => None,
    };
    let constrains_value = keywords
        .keys()
        .any(|key| key != "description" && key != "type");
    match nullable_type {
        Some(kind) if constrains_value && !keywords.contains_key("enum") => {
            object.remove("type");
            let mut value = serde_json::Map::new();
            value.insert("type".into(), kind);
            for key in ["format", "items"] {
                if let Some(moved) = object.remove(key) {
                    value.insert(key.into(), moved);
                }
            }
            if let Some(description) = keywords.get("description") {
                object.insert("description".into(), description.clone());
            }
            value.extend(keywords.into_iter().filter(|(key, _)| key != "description"));
            object.insert("anyOf".into(), json!([value, { "type": "null" }]));
        }
        _ => object.extend(keywords),
    }
}
