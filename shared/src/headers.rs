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

/// Headers for a message about one execution, deduplicated by `message_id`.
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
    headers
}
