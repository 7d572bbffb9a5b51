//! The ack policy, in one place: how each outcome of handling a dispatch is acknowledged.

use std::time::Duration;

use async_nats::jetstream::AckKind;

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

/// Redelivery delay after the `attempt`-th failed delivery: 1 s, 5 s, 15 s, then 30 s.
pub fn backoff(attempt: u32) -> Duration {
    match attempt {
        0 | 1 => Duration::from_secs(1),
        2 => Duration::from_secs(5),
        3 => Duration::from_secs(15),
        _ => Duration::from_secs(30),
    }
}

/// The acknowledgement each outcome gets.
pub fn ack_for(outcome: Outcome) -> AckKind {
    match outcome {
        Outcome::Resulted => AckKind::Ack,
        Outcome::Unreadable | Outcome::GaveUp => AckKind::Term,
        Outcome::FleetFailed { attempt } => AckKind::Nak(Some(backoff(attempt))),
        // Another worker can take it at once.
        Outcome::Interrupted => AckKind::Nak(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_maps_to_the_documented_acknowledgement() {
        assert!(matches!(ack_for(Outcome::Resulted), AckKind::Ack));
        assert!(matches!(ack_for(Outcome::Unreadable), AckKind::Term));
        assert!(matches!(ack_for(Outcome::GaveUp), AckKind::Term));
        assert!(matches!(ack_for(Outcome::Interrupted), AckKind::Nak(None)));
        assert!(matches!(
            ack_for(Outcome::FleetFailed { attempt: 2 }),
            AckKind::Nak(Some(delay)) if delay == Duration::from_secs(5)
        ));
    }

    #[test]
    fn backoff_grows_and_levels_off() {
        let delays: Vec<u64> = (1..=6).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 5, 15, 30, 30, 30]);
    }
}
