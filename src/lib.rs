//! The `herald` binary's library half: wiring roles together on an engine. `main` parses
//! flags, loads config, starts tracing, binds and wires signals; everything after the bind
//! happens here.

pub mod cluster;
pub mod http;
pub mod ops;
pub mod serve;

use herald_common::auth::TokenVerifier;
use herald_common::config::Config;

/// The client-token verifier the configuration describes.
pub fn token_verifier(config: &Config) -> anyhow::Result<TokenVerifier> {
    TokenVerifier::from_config(config)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("no JWT secret or public key configured"))
}
