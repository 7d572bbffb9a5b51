//! Live output over Server-Sent Events, replayed for late subscribers, ending with the result.

use std::time::Duration;

use serde_json::{json, Value};
use voidrunner_testkit::{spawn_app, wait_final, Backend, TestApp};

/// Reads a whole SSE response into (event, data) pairs.
async fn read_events(app: &TestApp, token: &str, execution_id: &str) -> Vec<(String, Value)> {
    let response = app
        .http
        .get(app.url(&format!("/executions/{execution_id}/events")))
        .bearer_auth(token)
        .send()
        .await
        .expect("events request");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("the event stream ends with the result")
        .expect("event stream body");
    let mut events = Vec::new();
    for block in body.split("\n\n") {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
        if let Some(name) = name {
            events.push((
                name,
                serde_json::from_str(&data).expect("event data is JSON"),
            ));
        }
    }
    events
}

fn output_of(events: &[(String, Value)], stream: &str) -> String {
    events
        .iter()
        .filter(|(name, data)| name == "output" && data["stream"] == stream)
        .map(|(_, data)| data["data"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn check(events: &[(String, Value)]) {
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"), "{names:?}");
    assert_eq!(names.last(), Some(&"result"), "{names:?}");
    assert_eq!(output_of(events, "stdout"), "one\nthree\n");
    assert_eq!(output_of(events, "stderr"), "two\n");
    let (_, result) = events.last().expect("result");
    assert_eq!(result["schema"], "voidrunner.result.v1");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["stdout"]["text"], "one\nthree\n");
}

#[tokio::test]
async fn output_streams_live_and_is_replayed_to_late_subscribers() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let code = "import sys, time\nprint('one')\ntime.sleep(0.3)\nprint('two', file=sys.stderr)\ntime.sleep(0.3)\nprint('three')\n";
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "live", "script_type": "python", "script_content": code }),
        )
        .await;
    let id = &app.start(&token, &task).await;

    let live = read_events(&app, &token, id).await;
    check(&live);

    wait_final(&app.http, &app.base_url, &token, id).await;
    let replayed = read_events(&app, &token, id).await;
    check(&replayed);
    assert_eq!(replayed.len(), live.len());
    app.stop().await;
}
