//! Live output: `GET /executions/{id}/events` as Server-Sent Events. It replays what the
//! EVENTS stream holds for the execution (so a late subscriber misses nothing), follows it
//! live, and ends with the result from the execution's reply subject, recorded before it is sent.
//!
//! Each event's `id` is its sequence in the EVENTS stream (`result` for the result), so a client
//! that reconnects with `Last-Event-ID` resumes right after the last event it saw.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;
use voidrunner_shared::subjects::EventKind;

use crate::error::{ApiError, Path};
use crate::executions::Lifecycle;
use crate::http::AuthUser;
use crate::openapi::{Common, Malformed, Missing};
use crate::state::AppState;

/// The stream sequence of the newest event stored for an execution (0 for none).
async fn last_stored(events: &async_nats::jetstream::stream::Stream, subjects: &[String]) -> u64 {
    let mut last = 0;
    for subject in subjects {
        if let Ok(message) = events.direct_get_last_for_subject(subject).await {
            last = last.max(message.sequence);
        }
    }
    last
}

/// Time a stream of a finished execution whose result has expired waits for more events.
const REPLAY_IDLE: Duration = Duration::from_secs(2);

/// Where a reconnecting client left off.
enum Resume {
    FromStart,
    After(u64),
    /// It saw the result: only the result again.
    AfterResult,
}

fn resume_point(headers: &HeaderMap) -> Result<Resume, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(Resume::FromStart);
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value == RESULT_EVENT_ID {
        return Ok(Resume::AfterResult);
    }
    value
        .parse()
        .map(Resume::After)
        .map_err(|_| ApiError::BadRequest {
            code: "invalid_last_event_id",
            message: "Last-Event-ID must be the id of an event this stream sent".into(),
        })
}

const RESULT_EVENT_ID: &str = "result";

#[utoipa::path(
    operation_id = "execution_stream",
    get,
    path = "/executions/{execution_id}/events",
    tag = "executions",
    params(("execution_id" = Uuid, Path, description = "The execution"), ("Last-Event-ID" = Option<String>, Header, pattern = "^([0-9]{1,19}|result)$", description = "Resume after this event id")),
    responses((status = 200, description = "Server-Sent Events: started, output, then result", content_type = "text/event-stream", body = String), Malformed, Missing, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(execution_id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = resume_point(&headers)?;
    let execution = state.executions.find_owned(user_id, execution_id).await?;
    let limit = state.config.max_streams_per_user;
    let slot = state
        .streams
        .take(user_id, limit)
        .ok_or(ApiError::TooManyStreams(limit))?;
    let feeds = Feeds::open(&state, execution_id, &resume).await?;
    let (events, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        feeds
            .forward(execution.status.is_final(), resume, events)
            .await;
        drop(slot);
    });
    let mut receiver = receiver;
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What a live-output stream reads from: the result (stored, or on its way), the execution's
/// stored and coming events, and where the stored ones end.
struct Feeds {
    execution_id: Uuid,
    executions: Lifecycle,
    live_result: async_nats::Subscriber,
    stored_result: Option<bytes::Bytes>,
    replay: async_nats::jetstream::consumer::pull::Ordered,
    events_stream: async_nats::jetstream::stream::Stream,
    event_subjects: [String; 2],
}

impl Feeds {
    async fn open(
        state: &AppState,
        execution_id: Uuid,
        resume: &Resume,
    ) -> Result<Feeds, ApiError> {
        let internal = |e: async_nats::Error| ApiError::Internal(anyhow::anyhow!(e));
        // Subscribed before anything is replayed, so the result cannot slip between the two.
        let live_result = state
            .nats
            .subscribe(state.namespace.result_subject(execution_id))
            .await
            .map_err(|e| internal(e.into()))?;
        let stored_result = state
            .jetstream
            .get_stream(state.namespace.results_stream())
            .await
            .map_err(|e| internal(e.into()))?
            .direct_get_last_for_subject(state.namespace.result_subject(execution_id))
            .await
            .ok()
            .map(|message| message.payload);
        let events_stream = state
            .jetstream
            .get_stream(state.namespace.events_stream())
            .await
            .map_err(|e| internal(e.into()))?;
        let replay = events_stream
            .create_consumer(OrderedConfig {
                filter_subject: state.namespace.execution_events_filter(execution_id),
                deliver_policy: match resume {
                    Resume::FromStart => DeliverPolicy::All,
                    Resume::After(sequence) => DeliverPolicy::ByStartSequence {
                        start_sequence: sequence + 1,
                    },
                    // Nothing but the result is sent; the replay is never read.
                    Resume::AfterResult => DeliverPolicy::New,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| internal(e.into()))?
            .messages()
            .await
            .map_err(|e| internal(e.into()))?;
        let event_subjects = [EventKind::Started, EventKind::Output]
            .map(|kind| state.namespace.event_subject(execution_id, kind));
        Ok(Feeds {
            execution_id,
            executions: state.executions.clone(),
            live_result,
            stored_result,
            replay,
            events_stream,
            event_subjects,
        })
    }

    /// Sends the stored and live events in order, then the result once every event stored
    /// before it has been sent; stops when the client goes away.
    async fn forward(mut self, finished: bool, resume: Resume, events: mpsc::Sender<Event>) {
        let (mut delivered, replay_nothing) = match resume {
            Resume::FromStart => (0, false),
            Resume::After(sequence) => (sequence, false),
            Resume::AfterResult => (u64::MAX, true),
        };
        let mut result = self.stored_result.take();
        // Once the result is in, the events to send are those stored before it.
        let mut last_event = None;
        loop {
            if let Some(payload) = &result {
                let last = match last_event {
                    Some(last) => last,
                    None => {
                        let last = last_stored(&self.events_stream, &self.event_subjects).await;
                        last_event = Some(last);
                        last
                    }
                };
                if delivered >= last {
                    // Recorded before it is sent, so that a client that reads the execution
                    // on seeing its result reads it final.
                    if let Err(error) = self
                        .executions
                        .finish_seen(self.execution_id, payload)
                        .await
                    {
                        tracing::warn!(execution_id = %self.execution_id, error = %error, "recording a streamed result failed");
                    }
                    let data = String::from_utf8_lossy(payload).into_owned();
                    let result = Event::default()
                        .event("result")
                        .id(RESULT_EVENT_ID)
                        .data(data);
                    let _ = events.send(result).await;
                    return;
                }
            }
            let idle = async {
                if finished && result.is_none() {
                    tokio::time::sleep(REPLAY_IDLE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = events.closed() => return,
                _ = idle => return,
                message = self.replay.next(), if !replay_nothing => match message {
                    Some(Ok(message)) => {
                        delivered = message.info().map(|info| info.stream_sequence).unwrap_or(delivered);
                        let kind = message.subject.rsplit('.').next().unwrap_or("event").to_owned();
                        let data = String::from_utf8_lossy(&message.payload).into_owned();
                        let event = Event::default().event(kind).id(delivered.to_string()).data(data);
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(execution_id = %self.execution_id, error = %error, "replaying events failed");
                        return;
                    }
                    None => return,
                },
                message = self.live_result.next(), if result.is_none() => match message {
                    Some(message) => result = Some(message.payload),
                    None => return,
                },
            }
        }
    }
}
