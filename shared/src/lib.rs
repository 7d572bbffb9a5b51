//! The VoidRunner wire contract.
//!
//! Everything that crosses NATS is named here and nowhere else: subjects, stream, consumer and
//! key-value bucket names, headers, and the versioned JSON events. A worker written in another
//! language can join the fleet from this crate's JSON Schemas (`nats/schemas/`) alone.

pub mod backoff;
pub mod catalog;
pub mod config;
pub mod connect;
pub mod events;
pub mod export;
pub mod headers;
pub mod language;
pub mod metrics;
pub mod nats_auth;
pub mod nats_server;
pub mod provision;
pub mod publish;
pub mod report;
pub mod status;
pub mod subjects;
pub mod telemetry;

pub use language::{Lane, Language};
pub use status::{Status, TaskStatus};
pub use subjects::Namespace;
