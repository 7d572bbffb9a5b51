//! Tasks: update and delete (not while an execution is queued or running), validation, and
//! cursor pagination that stays exact for every sort while tasks are being created.

use std::collections::HashSet;

use serde_json::{json, Value};
use voidrunner_testkit::{send, spawn_app, spawn_app_with, Backend, TestApp};

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> (u16, Value) {
    send(
        app.http
            .patch(app.url(&format!("/tasks/{id}")))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

async fn delete(app: &TestApp, token: &str, id: &str) -> u16 {
    app.http
        .delete(app.url(&format!("/tasks/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_task_is_updated_and_deleted_but_not_while_it_runs() {
    let app = spawn_app(Backend::Postgres).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "report", "script_type": "bash", "script_content": "sleep 30",
                     "description": "nightly report", "metadata": { "team": "search" } }),
        )
        .await;
    let id = task["id"].as_str().expect("id");
    assert_eq!(task["status"], "idle");
    assert_eq!(task["metadata"]["team"], "search");

    let (status, updated) = patch(
        &app,
        &token,
        id,
        json!({ "name": "report v2", "description": null, "priority": 9, "timeout_seconds": 3600 }),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "report v2");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["lane"], "high");
    assert_eq!(
        updated["metadata"]["team"], "search",
        "untouched fields stay"
    );
    assert!(updated["updated_at"].as_str() > task["updated_at"].as_str());

    // Bad patches change nothing.
    for (body, field) in [
        (json!({ "priority": 11 }), "priority"),
        (json!({ "name": null }), ""),
        (json!({ "colour": "red" }), ""),
        (json!({ "metadata": [1, 2] }), "metadata"),
        (json!({ "description": "d".repeat(1001) }), "description"),
        (json!({ "timeout_seconds": 3601 }), "timeout_seconds"),
        (
            json!({ "script_content": "x".repeat(64 * 1024 + 1) }),
            "script_content",
        ),
        (
            json!({ "metadata": { "blob": "b".repeat(16 * 1024) } }),
            "metadata",
        ),
    ] {
        let (status, body) = patch(&app, &token, id, body).await;
        assert_eq!(status, 422, "{body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["details"]["field"], field, "{body}");
        }
    }
    let (_, now) = send(
        app.http
            .get(app.url(&format!("/tasks/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(now, updated);

    // Someone else's task does not exist for them.
    let stranger = app.login_new_user().await;
    let (status, _) = patch(&app, &stranger, id, json!({ "name": "mine" })).await;
    assert_eq!(status, 404);
    assert_eq!(delete(&app, &stranger, id).await, 404);

    // While an execution runs, the task can be neither changed nor deleted.
    let execution = app.start(&token, &updated).await;
    app.wait_running(&token, &execution).await;
    let (_, listed) = send(
        app.http
            .get(app.url("/tasks?status=running"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let (status, body) = patch(&app, &token, id, json!({ "name": "busy" })).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(delete(&app, &token, id).await, 409);
    let cancelled = app
        .http
        .delete(app.url(&format!("/executions/{execution}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status().as_u16(), 202);
    app.wait_final(&token, &execution).await;
    let (_, after) = send(
        app.http
            .get(app.url(&format!("/tasks/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(after["status"], "cancelled");

    assert_eq!(delete(&app, &token, id).await, 204);
    let (status, _) = send(
        app.http
            .get(app.url(&format!("/tasks/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        app.http
            .get(app.url(&format!("/executions/{execution}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 404, "the task's executions went with it");
    app.stop().await;
}

fn key(task: &Value, sort: &str) -> Value {
    task[sort].clone()
}

/// Whether `a` comes before `b` in the listing's order (sort key, then id).
fn in_order(a: &Value, b: &Value, sort: &str, order: &str) -> bool {
    let (ka, kb) = (key(a, sort), key(b, sort));
    let cmp = match (ka.as_i64(), kb.as_i64()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => ka
            .as_str()
            .unwrap_or_default()
            .cmp(kb.as_str().unwrap_or_default()),
    }
    .then_with(|| {
        a["id"]
            .as_str()
            .unwrap_or_default()
            .cmp(b["id"].as_str().unwrap_or_default())
    });
    if order == "asc" {
        cmp.is_lt()
    } else {
        cmp.is_gt()
    }
}

#[tokio::test]
async fn every_sort_pages_through_all_tasks_once_while_new_ones_arrive() {
    // No worker needed: the listing is the api's alone.
    let app = spawn_app_with(Backend::Postgres, &[]).await;
    let token = app.login_new_user().await;
    let mut originals = HashSet::new();
    for n in 0..23 {
        // Few distinct names and priorities: many ties to break by id.
        let task = app
            .create_task_ok(
                &token,
                &json!({ "name": format!("job-{}", n % 4), "priority": n % 3,
                         "script_type": if n % 2 == 0 { "bash" } else { "python" },
                         "script_content": "true" }),
            )
            .await;
        originals.insert(task["id"].as_str().expect("id").to_owned());
    }
    let mut extra = 0;
    for sort in ["created_at", "updated_at", "priority", "name"] {
        for order in ["asc", "desc"] {
            let mut seen: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut url = format!("/tasks?limit=5&sort={sort}&order={order}");
                if let Some(cursor) = &cursor {
                    url.push_str(&format!("&cursor={cursor}"));
                }
                let (status, page) = send(app.http.get(app.url(&url)).bearer_auth(&token)).await;
                assert_eq!(status, 200, "{page}");
                seen.extend(page["items"].as_array().expect("items").iter().cloned());
                // Another client keeps creating tasks between pages.
                app.create_task_ok(
                    &token,
                    &json!({ "name": "job-1", "priority": 1, "script_type": "bash", "script_content": "true" }),
                )
                .await;
                extra += 1;
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            let ids: Vec<&str> = seen.iter().map(|t| t["id"].as_str().expect("id")).collect();
            let distinct: HashSet<&str> = ids.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                ids.len(),
                "{sort} {order}: a task was listed twice"
            );
            for original in &originals {
                assert!(
                    distinct.contains(original.as_str()),
                    "{sort} {order}: a task that existed throughout was skipped"
                );
            }
            for pair in seen.windows(2) {
                assert!(
                    in_order(&pair[0], &pair[1], sort, order),
                    "{sort} {order}: out of order: {} then {}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
    assert!(extra > 8 * 5);

    // Filters and bad parameters.
    let (_, bash) = send(
        app.http
            .get(app.url("/tasks?script_type=bash&limit=200"))
            .bearer_auth(&token),
    )
    .await;
    let items = bash["items"].as_array().expect("items");
    assert!(!items.is_empty());
    assert!(items.iter().all(|t| t["script_type"] == "bash"));
    let (_, idle) = send(
        app.http
            .get(app.url("/tasks?status=idle&limit=1"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(idle["items"][0]["status"], "idle");
    for bad in [
        "/tasks?sort=colour",
        "/tasks?limit=0",
        "/tasks?limit=201",
        "/tasks?status=sleeping",
        "/tasks?script_type=cobol",
        "/tasks?cursor=garbage",
        "/tasks?wat=1",
    ] {
        let (status, body) = send(app.http.get(app.url(bad)).bearer_auth(&token)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, first) = send(
        app.http
            .get(app.url("/tasks?limit=1&sort=name"))
            .bearer_auth(&token),
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let (status, body) = send(
        app.http
            .get(app.url(&format!("/tasks?limit=1&sort=priority&cursor={cursor}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400, "a cursor is tied to its sort: {body}");
    assert_eq!(body["error"]["code"], "invalid_cursor");
    app.stop().await;
}

#[tokio::test]
async fn a_tasks_executions_page_newest_first_with_a_status_filter() {
    let app = voidrunner_testkit::spawn_api_only(Backend::Sqlite, &[]).await;
    let token = app.login_new_user().await;
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "many", "script_type": "bash", "script_content": "true" }),
        )
        .await;
    let task_id = task["id"].as_str().expect("id");
    let mut started = Vec::new();
    for _ in 0..5 {
        started.push(app.start(&token, &task).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("/tasks/{task_id}/executions?limit=2");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = send(app.http.get(app.url(&url)).bearer_auth(&token)).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    started.reverse();
    assert_eq!(seen, started, "newest first, each once");

    let (_, queued) = send(
        app.http
            .get(app.url(&format!("/tasks/{task_id}/executions?status=queued")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(queued["items"].as_array().map(Vec::len), Some(5));
    let (_, done) = send(
        app.http
            .get(app.url(&format!("/tasks/{task_id}/executions?status=completed")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(done["items"], json!([]));
    for bad in ["status=sleeping", "limit=0", "cursor=nope"] {
        let (status, body) = send(
            app.http
                .get(app.url(&format!("/tasks/{task_id}/executions?{bad}")))
                .bearer_auth(&token),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    app.stop().await;
}
