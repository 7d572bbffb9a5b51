//! Rate limits per user (or API key) and per client IP: token buckets that refill steadily over a
//! minute. Every answer carries `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
//! `RateLimit-Policy`; a refused request gets 429 `rate_limited` with `Retry-After`.
//!
//! The buckets live in each api replica: with N replicas behind a balancer a client can get up
//! to N times the limit. The middleware that applies them is `http::throttle`. `StreamSlots`
//! bounds the live-output streams a user holds open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
/// Buckets untouched this long are full again and are dropped.
const IDLE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What a check decided, and what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again (or, when refused, until one request is allowed).
    pub reset_seconds: u64,
}

/// Token buckets by key.
#[derive(Clone, Default)]
pub struct Limiter {
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl Limiter {
    /// Takes one token from `key`'s bucket of `limit` requests per minute, at `now`.
    pub fn check(&self, key: &str, limit: u32, now: Instant) -> Decision {
        let capacity = f64::from(limit);
        let per_second = capacity / WINDOW.as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < IDLE);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let reset_seconds = if allowed {
            ((capacity - bucket.tokens) / per_second).ceil() as u64
        } else {
            ((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64
        };
        Decision {
            allowed,
            limit,
            remaining: bucket.tokens.floor() as u32,
            reset_seconds,
        }
    }
}

/// Live-output streams open per user: each holds a NATS subscription and a consumer for as long
/// as the client stays, so a user may hold only so many at once (in each api replica).
#[derive(Clone, Default)]
pub struct StreamSlots {
    open: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
}

/// One open stream; the slot is free again when this is dropped.
pub struct StreamSlot {
    slots: StreamSlots,
    user: uuid::Uuid,
}

impl StreamSlots {
    /// A slot for one more of `user`'s streams, or `None` when it holds `limit` already
    /// (`limit` 0: no limit).
    pub fn take(&self, user: uuid::Uuid, limit: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user).or_default();
        if limit != 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            slots: self.clone(),
            user,
        })
    }

    /// How many streams `user` holds open.
    pub fn open(&self, user: uuid::Uuid) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&user).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_limit_then_refuses_and_refills_over_the_window() {
        let limiter = Limiter::default();
        let start = Instant::now();
        for n in 0..6 {
            let decision = limiter.check("k", 6, start);
            assert!(decision.allowed, "request {n}");
            assert_eq!(decision.remaining, 5 - n);
        }
        let refused = limiter.check("k", 6, start);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_seconds, 10, "one token comes back every 10 s");
        assert!(
            limiter.check("other", 6, start).allowed,
            "keys are separate"
        );
        let later = limiter.check("k", 6, start + Duration::from_secs(10));
        assert!(later.allowed);
        assert!(
            !limiter
                .check("k", 6, start + Duration::from_secs(10))
                .allowed
        );
        let full = limiter.check("k", 6, start + Duration::from_secs(600));
        assert_eq!(full.remaining, 5);
    }

    #[test]
    fn a_user_holds_at_most_its_limit_of_streams_and_a_closed_one_frees_its_slot() {
        let slots = StreamSlots::default();
        let (alice, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let first = slots.take(alice, 2).expect("first");
        let _second = slots.take(alice, 2).expect("second");
        assert!(slots.take(alice, 2).is_none(), "a third is refused");
        assert!(slots.take(bob, 2).is_some(), "users are separate");
        drop(first);
        assert_eq!(slots.open(alice), 1);
        assert!(
            slots.take(alice, 2).is_some(),
            "a closed stream frees its slot"
        );
        assert!(slots.take(alice, 0).is_some(), "0 is no limit");
    }
}
