//! The stages a recipient passes through before and between attempts, each pure: the
//! pipeline's I/O loop gathers the facts, [`crate::pipeline::decide`] asks these.

pub mod caps;
pub mod escalation;
pub mod preferences;
pub mod quiet_hours;
pub mod templates;
pub mod unsubscribe;
