//! Herald's WebSocket gateway: `server` (auth and upgrade), `session` (one task per
//! connection), `hub` (who is connected, which topics, bus interest) and `wire` (each
//! session's socket, written by the hub directly, with its bounded write buffer). It reaches the rest of Herald only through the engine's
//! `Bus` and `History`, so the same code serves the embedded and the cluster engine.

pub mod hub;
pub mod metrics;
pub mod server;
pub mod session;
pub mod wire;

pub use hub::Hub;
pub use server::{Gateway, GatewayConfig};
