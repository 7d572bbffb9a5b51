//! The client commands: each talks REST to a VoidRunner api through [`crate::client`].

pub mod config;
pub mod doctor;
pub mod exit;
pub mod images;
pub mod resources;
pub mod run;
pub mod session;
pub mod table;
