//! The authorisation matrix: every operation of the OpenAPI document, called with every kind of
//! credential that must not work and with another user's valid token, against every kind of
//! resource id. The operations come from the served document, so a new route cannot escape.
//!
//! Expected: a credential that does not work answers 401 whatever the resource; another user's
//! valid token answers 404 for a resource it does not own (as for one that does not exist: never
//! 403, which would say it exists) and never shows the owner's ids in a listing.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::{json, Value};
use uuid::Uuid;
use voidrunner_api::auth::TokenKeys;
use voidrunner_api::entity::execution;
use voidrunner_shared::Status;
use voidrunner_testkit::{send, spawn_api_only, Backend, TestApp};

/// The operations anyone may call: they are left out of the matrix, and a new one must be
/// added here on purpose.
const PUBLIC: &[&str] = &[
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/refresh",
];

/// A user's resources, one of each kind a path can name.
struct Resources {
    task: String,
    execution: String,
    dead_letter: String,
    key: String,
}

impl Resources {
    fn missing() -> Resources {
        let id = || Uuid::new_v4().to_string();
        Resources {
            task: id(),
            execution: id(),
            dead_letter: id(),
            key: id(),
        }
    }

    fn ids(&self) -> [&str; 4] {
        [&self.task, &self.execution, &self.dead_letter, &self.key]
    }

    /// `template` with its parameters filled in from these resources.
    fn path(&self, template: &str) -> String {
        let execution = if template.starts_with("/api/v1/dead-letters/") {
            &self.dead_letter
        } else {
            &self.execution
        };
        let path = template
            .replace("{task_id}", &self.task)
            .replace("{execution_id}", execution)
            .replace("{key_id}", &self.key);
        assert!(
            !path.contains('{'),
            "{template}: the matrix does not know this path parameter; give Resources one"
        );
        path
    }
}

/// A user with a session, and one resource of each kind.
struct User {
    token: String,
    api_key: String,
    resources: Resources,
}

async fn new_user(app: &TestApp) -> User {
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "mine", "script_type": "python", "script_content": "print(1)" }),
        )
        .await;
    let task = task["id"].as_str().expect("task id").to_owned();
    let execution = start(app, &token, &task).await;
    let dead_letter = start(app, &token, &task).await;
    let mut dead: execution::ActiveModel =
        execution::Entity::find_by_id(Uuid::parse_str(&dead_letter).expect("uuid"))
            .one(&app.db.connection)
            .await
            .expect("query")
            .expect("execution")
            .into();
    dead.status = Set(Status::Failed);
    dead.dead_lettered_at = Set(Some(chrono::Utc::now()));
    dead.update(&app.db.connection)
        .await
        .expect("dead-letter it");
    let (status, key) = send(
        app.http
            .post(app.url("/auth/api-keys"))
            .bearer_auth(&token)
            .json(&json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    User {
        token,
        api_key: key["key"].as_str().expect("key").to_owned(),
        resources: Resources {
            task,
            execution,
            dead_letter,
            key: key["id"].as_str().expect("key id").to_owned(),
        },
    }
}

async fn start(app: &TestApp, token: &str, task: &str) -> String {
    let (status, body) = send(
        app.http
            .post(app.url(&format!("/tasks/{task}/executions")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().expect("execution id").to_owned()
}

/// The claims of a token, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[derive(Clone)]
enum Credential {
    Nothing,
    Bearer(String),
    ApiKey(String),
}

/// A valid body for each operation that takes one, so that a refusal is about who asks, not
/// about what was sent.
fn body_for(operation: &str) -> Option<Value> {
    let run = json!({ "language": "python", "code": "print(1)" });
    Some(match operation.replacen(" /api/v1/", " /", 1).as_str() {
        "POST /tasks" => {
            json!({ "name": "theirs", "script_type": "python", "script_content": "print(2)" })
        }
        "PATCH /tasks/{task_id}" => json!({ "name": "renamed" }),
        "POST /tasks/{task_id}/executions" => json!({ "stdin": "" }),
        "POST /runs" => run,
        "POST /runs/batch" => json!({ "runs": [run] }),
        "POST /auth/api-keys" => json!({ "name": "another" }),
        _ => return None,
    })
}

struct Operation {
    name: String,
    method: reqwest::Method,
    template: String,
    documented: BTreeSet<u16>,
    body: Option<Value>,
}

impl Operation {
    fn names_a_resource(&self) -> bool {
        self.template.contains('{')
    }

    async fn status(&self, app: &TestApp, credential: &Credential, path: &str) -> (u16, String) {
        let url = format!("{}{path}", app.base_url);
        let mut request = app.http.request(self.method.clone(), url);
        request = match credential {
            Credential::Nothing => request,
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::ApiKey(key) => request.header("X-API-Key", key),
        };
        if let Some(body) = &self.body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        // An event stream the caller may read stays open: its status is all that is needed.
        let text = if self.template.ends_with("/events") && status == 200 {
            String::new()
        } else {
            response.text().await.unwrap_or_default()
        };
        (status, text)
    }
}

fn operations(document: &Value) -> (Vec<Operation>, Vec<String>) {
    let mut guarded = Vec::new();
    let mut public = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let name = format!("{} {template}", method.to_uppercase());
            let secured = operation["security"]
                .as_array()
                .is_some_and(|requirements| !requirements.is_empty());
            if !secured {
                public.push(name);
                continue;
            }
            let body = body_for(&name);
            assert!(
                body.is_some() || operation["requestBody"]["required"] != json!(true),
                "{name} takes a body: give the matrix a valid one in body_for"
            );
            let documented = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter_map(|status| status.parse().ok())
                .collect();
            guarded.push(Operation {
                method: method.to_uppercase().parse().expect("method"),
                template: template.to_string(),
                documented,
                body,
                name,
            });
        }
    }
    (guarded, public)
}

#[tokio::test]
async fn no_operation_answers_a_bad_credential_or_another_users_resource_with_anything_but_401_or_404(
) {
    let app = spawn_api_only(Backend::Postgres, &[]).await;
    let document: Value = app
        .http
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("JSON");
    let (operations, mut public) = operations(&document);
    public.sort();
    let mut expected_public: Vec<String> = PUBLIC.iter().map(|s| s.to_string()).collect();
    expected_public.sort();
    assert_eq!(
        public, expected_public,
        "the operations without a security requirement are exactly the public ones"
    );

    // The owner: its token expired, its session logged out, its API key revoked; and a token
    // signed with another secret.
    let owner = new_user(&app).await;
    let secret = app
        .vars
        .iter()
        .find(|(name, _)| name == "VOIDRUNNER_JWT_SECRET")
        .map(|(_, value)| value.clone())
        .expect("the api's JWT secret");
    let own = claims(&owner.token);
    let user_id = Uuid::parse_str(own["sub"].as_str().expect("sub")).expect("uuid");
    let session_id = Uuid::parse_str(own["sid"].as_str().expect("sid")).expect("uuid");
    let expired = TokenKeys::new(secret.as_bytes(), 900)
        .issue_at(user_id, session_id, now() - 3600)
        .expect("token");
    let forged = TokenKeys::new(b"not-the-api-secret-not-the-api-secret", 900)
        .issue(user_id, session_id)
        .expect("token");
    let (status, _) = send(
        app.http
            .delete(app.url(&format!("/auth/api-keys/{}", owner.resources.key)))
            .bearer_auth(&owner.token),
    )
    .await;
    assert_eq!(status, 204, "the owner revokes its key");
    let revoked_key = owner.api_key.clone();
    // The owner's current token works until the session ends; then it is a logged-out one.
    let logged_out = owner.token.clone();
    let (status, _) = send(
        app.http
            .post(app.url("/auth/logout"))
            .bearer_auth(&logged_out),
    )
    .await;
    assert_eq!(status, 204, "the owner logs out");

    let refused: Vec<(&str, Credential)> = vec![
        ("no credential", Credential::Nothing),
        ("expired token", Credential::Bearer(expired)),
        ("logged-out token", Credential::Bearer(logged_out)),
        (
            "token signed with another secret",
            Credential::Bearer(forged),
        ),
        ("revoked API key", Credential::ApiKey(revoked_key)),
        ("garbage token", Credential::Bearer("vr.not.a-token".into())),
        ("garbage API key", Credential::ApiKey("vrk_0000".into())),
    ];

    let missing = Resources::missing();
    let mut cells = 0;
    let mut unexpected = Vec::new();
    for operation in &operations {
        // The intruder is a fresh user per operation: its own resources, then the owner's.
        let intruder = new_user(&app).await;
        let resource_kinds: Vec<(&str, &Resources)> = if operation.names_a_resource() {
            vec![
                ("own", &intruder.resources),
                ("other user's", &owner.resources),
                ("non-existent", &missing),
            ]
        } else {
            vec![("collection", &intruder.resources)]
        };
        for (kind, resources) in &resource_kinds {
            let path = resources.path(&operation.template);
            for (credential_name, credential) in &refused {
                cells += 1;
                let (status, body) = operation.status(&app, credential, &path).await;
                if status != 401 || !operation.documented.contains(&401) {
                    unexpected.push(format!(
                        "{} with {credential_name} on {kind}: {status} (want a documented 401) {body}",
                        operation.name
                    ));
                }
            }
        }
        // The intruder's own token, on the owner's and on no one's resource; its own last,
        // since the operation may end it (delete, cancel, log out).
        let valid = Credential::Bearer(intruder.token.clone());
        for (kind, resources) in resource_kinds.iter().rev() {
            cells += 1;
            let path = resources.path(&operation.template);
            let (status, body) = operation.status(&app, &valid, &path).await;
            let leaked = owner
                .resources
                .ids()
                .into_iter()
                .find(|id| body.contains(*id));
            let fine = match *kind {
                "other user's" | "non-existent" => status == 404,
                _ => status != 401 && status != 403 && status != 404,
            } && operation.documented.contains(&status)
                && leaked.is_none();
            if !fine {
                unexpected.push(format!(
                    "{} with another user's valid token on {kind}: {status}{} {body}",
                    operation.name,
                    leaked
                        .map(|id| format!(", shows the owner's {id}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    println!(
        "authorisation matrix: {} operations ({} public, left out), {} requests, {} unexpected",
        operations.len(),
        public.len(),
        cells,
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "unexpected answers:\n{}",
        unexpected.join("\n")
    );
    assert!(operations.len() >= 20, "the document lists the operations");
}
