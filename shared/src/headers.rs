//! Headers carried by every VoidRunner message.

use async_nats::HeaderMap;
use uuid::Uuid;

/// Deduplication id; JetStream drops a second publish with the same id inside the window.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
pub const EXECUTION_ID: &str = "Voidrunner-Execution-Id";
pub const TASK_ID: &str = "Voidrunner-Task-Id";
/// Which delivery of the dispatch produced this message (1 for the first).
pub const ATTEMPT: &str = "Voidrunner-Attempt";
/// W3C trace context, carried from the HTTP request to the sandbox and back.
pub const TRACEPARENT: &str = "traceparent";

/// Headers for a message about one execution, deduplicated by `message_id`, in the trace of
/// the current span (`traceparent`), so the receiver continues it.
pub fn for_execution(
    message_id: &str,
    execution_id: Uuid,
    task_id: Uuid,
    attempt: u32,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_ID, message_id);
    headers.insert(EXECUTION_ID, execution_id.to_string().as_str());
    headers.insert(TASK_ID, task_id.to_string().as_str());
    headers.insert(ATTEMPT, attempt.to_string().as_str());
    if let Some(traceparent) = crate::telemetry::current_traceparent() {
        headers.insert(TRACEPARENT, traceparent.as_str());
    }
    headers
}

/// The `traceparent` a message carries, if any.
pub fn traceparent(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(TRACEPARENT).map(|value| value.as_str())
}

/// The `Nats-Msg-Id` of each message about an execution. Whoever publishes one (a worker, an
/// api replica reporting for the fleet) uses the same id, so it is stored once.
pub mod message_id {
    use uuid::Uuid;

    /// The execution's dispatch on TASKS: one per execution, however often the outbox publishes.
    pub fn dispatch(execution_id: Uuid) -> String {
        execution_id.to_string()
    }

    /// Its result on RESULTS: one per execution, whichever attempt or reporter comes first.
    /// The dispatch token is part of it, so that a result published without the token cannot
    /// take the real one's place in the dedup window.
    pub fn result(execution_id: Uuid, dispatch_token: Option<&str>) -> String {
        match dispatch_token {
            Some(token) => format!("result-{execution_id}-{token}"),
            None => format!("result-{execution_id}"),
        }
    }

    /// Its dead letter on DLQ.
    pub fn dead_letter(execution_id: Uuid) -> String {
        format!("dlq-{execution_id}")
    }

    /// The `started` event of one delivery.
    pub fn started(execution_id: Uuid, attempt: u32) -> String {
        format!("started-{execution_id}-{attempt}")
    }

    /// The `seq`-th output chunk of one delivery.
    pub fn output(execution_id: Uuid, attempt: u32, seq: u64) -> String {
        format!("output-{execution_id}-{attempt}-{seq}")
    }
}
