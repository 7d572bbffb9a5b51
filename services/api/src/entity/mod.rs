//! sea-orm entities: the database is the system of record for users, tasks and executions.

pub mod api_key;
pub mod execution;
pub mod refresh_token;
pub mod session;
pub mod task;
pub mod user;
pub mod webhook_attempt;
