//! Live output over Server-Sent Events, replayed for late subscribers, ending with the result.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use voidrunner_testkit::{spawn_app, wait_final, Backend, TestApp};

/// One Server-Sent Event as received, with when it arrived.
struct Received {
    id: String,
    name: String,
    data: Value,
    at: Instant,
}

/// Reads an SSE response to its end, resuming after `last_event_id` when given.
async fn receive(
    app: &TestApp,
    token: &str,
    execution_id: &str,
    last_event_id: Option<&str>,
) -> Vec<Received> {
    let mut request = app
        .http
        .get(app.url(&format!("/executions/{execution_id}/events")))
        .bearer_auth(token);
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let mut response = request.send().await.expect("events request");
    assert_eq!(response.status(), 200);
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the event stream ends with the result")
            .expect("event stream body");
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut name, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                } else if let Some(value) = line.strip_prefix("id: ") {
                    id = value.to_owned();
                }
            }
            if let Some(name) = name {
                events.push(Received {
                    id,
                    name,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                    at: Instant::now(),
                });
            }
        }
    }
    events
}

/// Reads a whole SSE response into (event, data) pairs.
async fn read_events(app: &TestApp, token: &str, execution_id: &str) -> Vec<(String, Value)> {
    receive(app, token, execution_id, None)
        .await
        .into_iter()
        .map(|event| (event.name, event.data))
        .collect()
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

#[tokio::test]
async fn a_program_printing_for_seconds_streams_as_it_prints_and_a_reconnect_resumes() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.login_new_user().await;
    let code = "for i in 1 2 3 4; do echo tick $i; sleep 0.7; done\n";
    let task = app
        .create_task_ok(
            &token,
            &json!({ "name": "ticks", "script_type": "bash", "script_content": code }),
        )
        .await;
    let id = &app.start(&token, &task).await;
    let live = receive(&app, &token, id, None).await;
    let first_output = live.iter().find(|e| e.name == "output").expect("output");
    let result = live.last().expect("result");
    assert_eq!(result.name, "result");
    assert_eq!(result.id, "result");
    assert!(
        result.at.duration_since(first_output.at) > Duration::from_millis(1500),
        "output arrived in one lump at the end, not as it was printed"
    );

    // Every event has an id; reconnecting after one of them gives exactly the rest.
    let all = receive(&app, &token, id, None).await;
    assert!(all.iter().all(|e| !e.id.is_empty()));
    let cut = 2;
    let rest = receive(&app, &token, id, Some(&all[cut - 1].id)).await;
    let expected: Vec<(&str, &Value)> = all[cut..]
        .iter()
        .map(|e| (e.name.as_str(), &e.data))
        .collect();
    let got: Vec<(&str, &Value)> = rest.iter().map(|e| (e.name.as_str(), &e.data)).collect();
    assert_eq!(got, expected);
    let after_result = receive(&app, &token, id, Some("result")).await;
    assert_eq!(after_result.len(), 1);
    assert_eq!(after_result[0].name, "result");

    let (status, body) = voidrunner_testkit::send(
        app.http
            .get(app.url(&format!("/executions/{id}/events")))
            .bearer_auth(&token)
            .header("last-event-id", "yesterday"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}
