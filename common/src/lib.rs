//! Herald's wire contract, shared by every role: the HTTP API and WebSocket frame types,
//! NATS subject names, configuration, and client/API authentication.
//!
//! Invariant: this crate depends on no web framework and no engine; it is pure data and rules.

pub mod api;
pub mod auth;
pub mod config;
pub mod events;
pub mod ids;
pub mod protocol;
pub mod ratelimit;
pub mod subjects;
pub mod time;
pub mod topic;
pub mod webhooks;

pub use ulid::Ulid;
