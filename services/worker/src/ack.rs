//! The ack policy, in one place: how each outcome of handling a dispatch is acknowledged.

use async_nats::jetstream::AckKind;
use voidrunner_shared::backoff::Backoff;

/// How the handling of one dispatch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A final result is on the execution's reply subject (from this run or an earlier one).
    Resulted,
    /// The payload can never be run (not a known schema); nothing will change that.
    Unreadable,
    /// The fleet could not run it this time (Docker down, image missing here, NATS trouble).
    FleetFailed { attempt: u32 },
    /// The fleet gave up: the dead letter and an `error` result were published.
    GaveUp,
    /// The worker is shutting down before it could finish.
    Interrupted,
}

/// The acknowledgement each outcome gets.
pub fn ack_for(outcome: Outcome) -> AckKind {
    match outcome {
        Outcome::Resulted => AckKind::Ack,
        Outcome::Unreadable | Outcome::GaveUp => AckKind::Term,
        Outcome::FleetFailed { attempt } => AckKind::Nak(Some(Backoff::REDELIVERY.after(attempt))),
        // Another worker can take it at once.
        Outcome::Interrupted => AckKind::Nak(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_outcome_maps_to_the_documented_acknowledgement() {
        assert!(matches!(ack_for(Outcome::Resulted), AckKind::Ack));
        assert!(matches!(ack_for(Outcome::Unreadable), AckKind::Term));
        assert!(matches!(ack_for(Outcome::GaveUp), AckKind::Term));
        assert!(matches!(ack_for(Outcome::Interrupted), AckKind::Nak(None)));
        assert!(matches!(
            ack_for(Outcome::FleetFailed { attempt: 2 }),
            AckKind::Nak(Some(delay)) if delay == Duration::from_secs(2)
        ));
    }
}
