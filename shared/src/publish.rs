//! Publishing to JetStream and waiting for the stream's acknowledgement, the way every
//! VoidRunner service does it: within a deadline, trying again on the way when the server did
//! not answer. A retry is harmless because every message carries a `Nats-Msg-Id`.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, publish::PublishAck};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::backoff::Backoff;

/// How long one publish may take, retries included, unless the caller says otherwise.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// The wait before publishing again after an attempt that got no acknowledgement.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// How long one attempt waits for its acknowledgement.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No acknowledgement came before the deadline (the server is down or overloaded).
    #[error("no acknowledgement from JetStream within {0:?} for {1}")]
    Timeout(Duration, String),
    /// The server refused the message for good (no stream takes the subject, it is too large,
    /// the stream is full).
    #[error("JetStream refused the message on {subject}")]
    Refused {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("the message could not be encoded")]
    Encode(#[from] serde_json::Error),
}

impl PublishError {
    /// Whether a later try can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PublishError::Timeout(..))
    }
}

/// Publishes `payload` on `subject` and waits for its acknowledgement, trying again on
/// timeouts until `deadline` has passed.
pub async fn publish_acked(
    jetstream: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    deadline: Duration,
) -> Result<PublishAck, PublishError> {
    let give_up_at = tokio::time::Instant::now() + deadline;
    let mut failures = 0;
    loop {
        let remaining = give_up_at.saturating_duration_since(tokio::time::Instant::now());
        let attempt = tokio::time::timeout(
            remaining.min(ATTEMPT_TIMEOUT),
            publish_once(jetstream, &subject, &headers, &payload),
        )
        .await;
        match attempt {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(Attempt::Refused(source))) => {
                return Err(PublishError::Refused { subject, source })
            }
            Ok(Err(Attempt::Unanswered)) | Err(_) => {}
        }
        failures += 1;
        let wait = RETRY.after(failures);
        if tokio::time::Instant::now() + wait >= give_up_at {
            return Err(PublishError::Timeout(deadline, subject));
        }
        tracing::debug!(%subject, failures, "publish unacknowledged; trying again");
        tokio::time::sleep(wait).await;
    }
}

/// Serialises `event` as JSON and publishes it like `publish_acked`.
pub async fn publish_json<T: serde::Serialize>(
    jetstream: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    event: &T,
) -> Result<PublishAck, PublishError> {
    let payload = serde_json::to_vec(event)?;
    publish_acked(
        jetstream,
        subject,
        headers,
        payload.into(),
        PUBLISH_DEADLINE,
    )
    .await
}

enum Attempt {
    /// Worth another try: the request or its acknowledgement was lost.
    Unanswered,
    Refused(async_nats::Error),
}

async fn publish_once(
    jetstream: &jetstream::Context,
    subject: &str,
    headers: &HeaderMap,
    payload: &Bytes,
) -> Result<PublishAck, Attempt> {
    let sent: PublishAckFuture = jetstream
        .publish_with_headers(subject.to_owned(), headers.clone(), payload.clone())
        .await
        .map_err(classify)?;
    sent.await.map_err(classify)
}

/// No stream answering is what a restarting server or a cluster electing a leader looks like,
/// so it is tried again like a timeout.
fn classify(error: async_nats::jetstream::context::PublishError) -> Attempt {
    use async_nats::jetstream::context::PublishErrorKind;
    match error.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound => Attempt::Unanswered,
        _ => Attempt::Refused(error.into()),
    }
}
