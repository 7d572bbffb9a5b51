//! sea-orm entities: the database is the system of record for users, tasks and executions.

pub mod execution;
pub mod task;
pub mod user;
