//! Subject, stream, consumer and bucket names. Nothing outside this module spells one.

use uuid::Uuid;

use crate::{Lane, Language};

/// The kind of an event on the EVENTS stream; it is the last token of the event's subject so that
/// consumers can filter on it (the recorder only wants `started`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Output,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Output => "output",
        }
    }
}

/// All names of one VoidRunner installation, derived from its subject prefix.
///
/// Tests give each case its own prefix so that many installations share one nats-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
    stream_prefix: String,
}

/// The error for a prefix that cannot be a NATS subject token and stream-name part.
#[derive(Debug, thiserror::Error)]
#[error("invalid subject prefix {0:?}: use 1-32 characters from a-z, 0-9, '_' and '-'")]
pub struct InvalidPrefix(pub String);

impl Namespace {
    pub const DEFAULT_PREFIX: &'static str = "voidrunner";

    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(InvalidPrefix(prefix.to_owned()));
        }
        Ok(Namespace {
            prefix: prefix.to_owned(),
            stream_prefix: prefix.to_ascii_uppercase().replace('-', "_"),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>.tasks.<lane>.<language>`: one message per execution to run.
    pub fn task_subject(&self, lane: Lane, language: Language) -> String {
        format!("{}.tasks.{lane}.{language}", self.prefix)
    }

    /// `<p>.results.<execution_id>`: the execution's reply subject.
    pub fn result_subject(&self, execution_id: Uuid) -> String {
        format!("{}.results.{execution_id}", self.prefix)
    }

    /// `<p>.events.<execution_id>.<kind>`: started and output events of one execution.
    pub fn event_subject(&self, execution_id: Uuid, kind: EventKind) -> String {
        format!("{}.events.{execution_id}.{}", self.prefix, kind.as_str())
    }

    /// Every event of one execution, for live output and replay.
    pub fn execution_events_filter(&self, execution_id: Uuid) -> String {
        format!("{}.events.{execution_id}.>", self.prefix)
    }

    /// `<p>.dlq.<lane>.<language>`: executions the fleet gave up on.
    pub fn dead_letter_subject(&self, lane: Lane, language: Language) -> String {
        format!("{}.dlq.{lane}.{language}", self.prefix)
    }

    pub fn tasks_stream(&self) -> String {
        format!("{}_TASKS", self.stream_prefix)
    }

    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.stream_prefix)
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_prefix)
    }

    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.stream_prefix)
    }

    pub(crate) fn tasks_stream_subjects(&self) -> String {
        format!("{}.tasks.>", self.prefix)
    }

    /// Headers-only copies of new dispatches: a wake-up call for idle workers, so that they
    /// need not poll the lanes to notice new work quickly.
    pub fn wakeup_filter(&self) -> String {
        format!("{}.wakeup.>", self.prefix)
    }

    pub(crate) fn results_stream_subjects(&self) -> String {
        format!("{}.results.*", self.prefix)
    }

    pub(crate) fn events_stream_subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    pub(crate) fn started_events_filter(&self) -> String {
        format!("{}.events.*.{}", self.prefix, EventKind::Started.as_str())
    }

    pub(crate) fn dead_letter_stream_subjects(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// The durable consumer of one language's executions in a lane, shared by every worker
    /// that serves the language: a worker binds only its languages' consumers, so it never
    /// receives an execution it cannot run.
    pub fn lane_consumer(&self, lane: Lane, language: Language) -> String {
        format!("workers-{lane}-{language}")
    }

    /// The one consumer a lane had before consumers were per language (its filter overlaps
    /// theirs, which a work-queue stream refuses): provisioning removes it.
    pub fn retired_lane_consumer(&self, lane: Lane) -> String {
        format!("workers-{lane}")
    }

    /// The durable consumer on RESULTS, shared by every api replica.
    pub fn recorder_consumer(&self) -> &'static str {
        "recorder"
    }

    /// The durable consumer of `started` events on EVENTS, shared by every api replica.
    pub fn started_recorder_consumer(&self) -> &'static str {
        "recorder-started"
    }

    /// KV bucket of worker heartbeats; entries expire when a worker stops beating.
    pub fn heartbeat_bucket(&self) -> String {
        format!("{}_workers", self.stream_prefix)
    }

    /// KV bucket of cancellation requests, keyed by execution id.
    pub fn cancellation_bucket(&self) -> String {
        format!("{}_cancellations", self.stream_prefix)
    }

    /// `<p>.workers.<worker_id>.status`: a worker's status endpoint (service API request).
    pub fn worker_status_subject(&self, worker_id: &str) -> String {
        format!("{}.workers.{worker_id}.status", self.prefix)
    }

    /// JetStream's advisory that a lane consumer ran out of deliveries for a dispatch.
    pub fn max_deliveries_advisory(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.tasks_stream()
        )
    }

    /// Queue group of the api replicas, so that one of them handles each advisory.
    pub fn api_queue_group(&self) -> String {
        format!("{}-api", self.prefix)
    }

    /// The name workers register under with the NATS service API (`nats micro ls`).
    pub fn worker_service_name(&self) -> String {
        format!("{}-worker", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let ns = Namespace::new("vr-test_1").expect("valid prefix");
        let id = Uuid::nil();
        assert_eq!(
            ns.task_subject(
                Lane::High,
                "python".parse::<Language>().expect("in the catalog")
            ),
            "vr-test_1.tasks.high.python"
        );
        assert_eq!(ns.result_subject(id), format!("vr-test_1.results.{id}"));
        assert_eq!(ns.tasks_stream(), "VR_TEST_1_TASKS");
        assert_eq!(
            ns.event_subject(id, EventKind::Started),
            format!("vr-test_1.events.{id}.started")
        );
    }

    #[test]
    fn prefixes_that_would_break_subjects_are_refused() {
        for bad in ["", "a.b", "a*", "a>", "A", "with space", &"x".repeat(33)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
