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
    let mut verifier = match (&config.jwt_public_key, &config.jwt_secret) {
        (Some(path), _) => TokenVerifier::from_public_key_file(path).map_err(anyhow::Error::msg)?,
        (None, Some(secret)) => TokenVerifier::hs256(secret.expose()),
        (None, None) => anyhow::bail!("no JWT secret or public key configured"),
    };
    if !config.jwt_issuer.is_empty() {
        verifier = verifier.require_issuer(&config.jwt_issuer);
    }
    if !config.jwt_audience.is_empty() {
        verifier = verifier.require_audience(&config.jwt_audience);
    }
    Ok(verifier)
}
