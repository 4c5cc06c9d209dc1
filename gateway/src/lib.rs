//! Herald's WebSocket gateway: `server` (auth and upgrade), `session` (one task per
//! connection), `hub` (who is connected, which topics, bus interest) and `outbox` (each
//! session's bounded queue). It reaches the rest of Herald only through the engine's
//! `Bus` and `History`, so the same code serves the embedded and the cluster engine.

pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod server;
pub mod session;

pub use hub::Hub;
pub use server::{Gateway, GatewayConfig};
