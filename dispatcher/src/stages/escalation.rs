//! Escalation (SPEC §9): `"escalate":{"after_s":600,"unless":"read","channels":["email"]}`.
//! After an in-app delivery the recipient waits — durably, as a job due at the deadline —
//! for a read (or an ack); a receipt from any session on any gateway ends the wait
//! (`delivered`, no more channels); otherwise an `unread` attempt is recorded and delivery
//! goes on over the escalation's channels.

use herald_common::api::{Escalate, EscalateUnless, Outcome};
use herald_engine::store::Phase;

/// Whether the in-app attempt that came to `outcome` starts a wait, and until when.
/// `unless: read` waits after an ack; `unless: ack` waits after an ack timeout (a late ack
/// still counts), and an ack at once needs no wait.
pub fn awaits(
    escalate: Option<&Escalate>,
    phase: &Phase,
    outcome: Outcome,
    now: i64,
) -> Option<i64> {
    let e = escalate?;
    if *phase != Phase::Deliver {
        return None;
    }
    let waits = match e.unless {
        EscalateUnless::Read => outcome == Outcome::Acked,
        EscalateUnless::Ack => outcome == Outcome::AckTimeout,
    };
    waits.then(|| now.saturating_add(e.after_s as i64 * 1000))
}

/// Whether the receipts recorded for the recipient end its wait.
pub fn satisfied(unless: EscalateUnless, read_at: Option<i64>, acked_at: Option<i64>) -> bool {
    match unless {
        EscalateUnless::Read => read_at.is_some(),
        // A read implies the app had it.
        EscalateUnless::Ack => acked_at.is_some() || read_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_common::api::ChannelKind;

    fn esc(unless: EscalateUnless) -> Escalate {
        Escalate {
            after_s: 600,
            unless,
            channels: vec![ChannelKind::Email],
        }
    }

    #[test]
    fn who_waits_and_who_is_done() {
        let read = esc(EscalateUnless::Read);
        let ack = esc(EscalateUnless::Ack);
        assert_eq!(
            awaits(Some(&read), &Phase::Deliver, Outcome::Acked, 1_000),
            Some(601_000)
        );
        assert_eq!(
            awaits(Some(&read), &Phase::Deliver, Outcome::Offline, 1_000),
            None,
            "offline: the message's own fallback"
        );
        assert_eq!(
            awaits(Some(&ack), &Phase::Deliver, Outcome::Acked, 1_000),
            None,
            "acked at once: done"
        );
        assert_eq!(
            awaits(Some(&ack), &Phase::Deliver, Outcome::AckTimeout, 1_000),
            Some(601_000)
        );
        assert_eq!(
            awaits(Some(&read), &Phase::Escalated, Outcome::Acked, 1_000),
            None,
            "once only"
        );
        assert_eq!(awaits(None, &Phase::Deliver, Outcome::Acked, 1_000), None);
        assert!(satisfied(EscalateUnless::Read, Some(5), None));
        assert!(
            !satisfied(EscalateUnless::Read, None, Some(5)),
            "an ack is not a read"
        );
        assert!(satisfied(EscalateUnless::Ack, None, Some(5)));
        assert!(satisfied(EscalateUnless::Ack, Some(5), None));
        assert!(!satisfied(EscalateUnless::Ack, None, None));
    }
}
