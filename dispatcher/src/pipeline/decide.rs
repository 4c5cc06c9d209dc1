//! What happens next to one recipient, decided without I/O: the delivery loop
//! ([`super::Pipeline`]) gathers the facts — the job's state, the profile, receipts, the
//! clock — asks [`plan`] what to do before a step and [`after`] what an attempt's outcome
//! leads to, and carries the answer out (records it, calls a channel, leaves the job
//! waiting). Waiting is data: a deferred, scheduled or escalating recipient is a job with a
//! later due time, never a sleeping task.
//!
//! The order of the checks before a step: expiry, an escalation wait, the frequency cap,
//! the channel list's end, opt-outs, quiet hours; then the channel is attempted.

use herald_common::api::{
    ChannelKind, Outcome, Priority, QuietHours, RecipientStatus, Strategy, UserProfile,
};
use herald_common::config::{CapConfig, RetryPolicy};
use herald_common::time::rfc3339;
use herald_engine::store::{JobState, MessageRecord, Phase};

use crate::stages::{caps, escalation, preferences, quiet_hours};

/// The rules every recipient is decided by (from the configuration).
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry: RetryPolicy,
    /// Categories that ignore opt-outs and quiet hours.
    pub critical: Vec<String>,
    /// Quiet hours of users whose profile has none.
    pub quiet_hours: Option<QuietHours>,
    /// The time zone of users whose profile names none.
    pub timezone: String,
    pub caps: Vec<CapConfig>,
}

impl Policy {
    pub fn is_critical(&self, category: Option<&str>) -> bool {
        category.is_some_and(|c| self.critical.iter().any(|k| k == c))
    }
}

/// When the recipient's message was read and acked, by any session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receipts {
    pub read_at: Option<i64>,
    pub acked_at: Option<i64>,
}

/// What the loop knows before a step.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub now: i64,
    pub message: &'a MessageRecord,
    pub state: &'a JobState,
    pub profile: Option<&'a UserProfile>,
    /// Loaded on [`Step::LoadReceipts`].
    pub receipts: Option<Receipts>,
}

/// An attempt recorded without calling a channel (a skip, a deferral, `unread`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub channel: ChannelKind,
    pub outcome: Outcome,
    pub detail: String,
}

impl Note {
    fn new(channel: ChannelKind, outcome: Outcome, detail: impl Into<String>) -> Note {
        Note {
            channel,
            outcome,
            detail: detail.into(),
        }
    }
}

/// What to do before a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Read the recipient's receipts, then ask again.
    LoadReceipts,
    /// Take the recipient's slot of its category's cap: granted, ask again with
    /// `cap_taken`; full, [`capped`] says how it ends.
    TakeCap {
        key: String,
        per_user: u32,
        window_ms: i64,
    },
    /// Attempt this channel, then ask [`after`].
    Attempt(ChannelKind),
    /// Record `note` (if any) and go on as `next` says.
    Move { note: Option<Note>, next: Next },
}

/// Where a recipient goes after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Final.
    Finish {
        status: RecipientStatus,
        channel: Option<ChannelKind>,
    },
    /// The same channel again at the state's due time (a transient error).
    Retry(JobState),
    /// Waits until the state's due time (quiet hours, an escalation wait).
    Wait(JobState),
    /// On to the state's channel now. `gave_up`: the attempt ended the channel after that
    /// many transient errors; `fallback`: nothing has succeeded and another channel follows.
    Go {
        state: JobState,
        gave_up: Option<u32>,
        fallback: bool,
    },
}

/// Decides the recipient's next step.
pub fn plan(policy: &Policy, f: &Facts<'_>) -> Step {
    let (message, st) = (f.message, f.state);
    let critical = policy.is_critical(message.category.as_deref());
    if message.expires_at.is_some_and(|e| f.now >= e) {
        // A recipient already delivered in the app (waiting or escalating) keeps that.
        let (status, channel) = match (&st.phase, st.best) {
            (Phase::Deliver, _) | (_, None) => (RecipientStatus::Expired, None),
            (_, Some((s, c))) => (s, Some(c)),
        };
        return finish(None, status, channel);
    }
    if let Phase::Awaiting { until } = st.phase {
        let Some(r) = f.receipts else {
            return Step::LoadReceipts;
        };
        let unless = message
            .escalate
            .as_ref()
            .map(|e| e.unless)
            .unwrap_or_default();
        if escalation::satisfied(unless, r.read_at, r.acked_at) {
            return finish(None, RecipientStatus::Delivered, Some(ChannelKind::InApp));
        }
        if f.now < until {
            return Step::Move {
                note: None,
                next: Next::Wait(JobState {
                    due_at: until,
                    ..st.clone()
                }),
            };
        }
        let waited = message.escalate.as_ref().map_or(0, |e| e.after_s);
        let what = match unless {
            herald_common::api::EscalateUnless::Read => "read",
            herald_common::api::EscalateUnless::Ack => "acked",
        };
        return Step::Move {
            note: Some(Note::new(
                ChannelKind::InApp,
                Outcome::Unread,
                format!("not {what} within {waited} s; escalating"),
            )),
            next: Next::Go {
                state: JobState {
                    phase: Phase::Escalated,
                    channel_idx: 0,
                    channel_attempt: 0,
                    done_devices: Vec::new(),
                    due_at: f.now,
                    ..st.clone()
                },
                gave_up: None,
                fallback: false,
            },
        };
    }
    if !st.cap_taken
        && st.phase == Phase::Deliver
        && let Some(cap) = caps::cap_for(&policy.caps, message.category.as_deref())
        && let Some(r) = message.recipients.get(st.idx as usize)
    {
        return Step::TakeCap {
            key: caps::slot_key(cap, &r.user_id),
            per_user: cap.per_user,
            window_ms: (cap.window_s as i64).saturating_mul(1000),
        };
    }
    let channels = message.channels_of(&st.phase);
    let Some(&kind) = channels.get(st.channel_idx as usize) else {
        return match st.best {
            Some((s, c)) => finish(None, s, Some(c)),
            None if st.tried => finish(None, RecipientStatus::Failed, None),
            // Nothing attempted: every channel was one the user opted out of.
            None => finish(None, RecipientStatus::Skipped, None),
        };
    };
    if let Some(why) =
        preferences::opted_out(f.profile, message.category.as_deref(), kind, critical)
    {
        return Step::Move {
            note: Some(Note::new(kind, Outcome::Skipped, why)),
            next: go_on(st, channels.len(), None, f.now),
        };
    }
    if kind != ChannelKind::InApp
        && message.priority != Priority::High
        && !critical
        && let Some(window) = f
            .profile
            .and_then(|p| p.quiet_hours.as_ref())
            .or(policy.quiet_hours.as_ref())
    {
        let name = f.profile.and_then(|p| p.timezone.as_deref());
        let tz = quiet_hours::zone(name, &policy.timezone);
        if let Some(end) = quiet_hours::window_end(window, &tz, f.now) {
            let zone = name.unwrap_or(&policy.timezone);
            return Step::Move {
                note: Some(Note::new(
                    kind,
                    Outcome::Deferred,
                    format!(
                        "quiet hours {}-{} ({zone}) until {}",
                        window.start,
                        window.end,
                        rfc3339(end)
                    ),
                )),
                next: Next::Wait(JobState {
                    due_at: end,
                    ..st.clone()
                }),
            };
        }
    }
    Step::Attempt(kind)
}

/// How a recipient whose cap is full ends (the first channel carries the note).
pub fn capped(f: &Facts<'_>, cap: &CapConfig) -> Step {
    let channel = f
        .message
        .channels
        .first()
        .copied()
        .unwrap_or(ChannelKind::InApp);
    finish(
        Some(Note::new(channel, Outcome::Skipped, caps::detail(cap))),
        RecipientStatus::Skipped,
        None,
    )
}

fn finish(note: Option<Note>, status: RecipientStatus, channel: Option<ChannelKind>) -> Step {
    Step::Move {
        note,
        next: Next::Finish { status, channel },
    }
}

/// The next channel of the list, now.
fn go_on(st: &JobState, channels: usize, gave_up: Option<u32>, now: i64) -> Next {
    Next::Go {
        fallback: st.best.is_none() && (st.channel_idx as usize + 1) < channels,
        state: JobState {
            channel_idx: st.channel_idx + 1,
            channel_attempt: 0,
            done_devices: Vec::new(),
            due_at: now,
            ..st.clone()
        },
        gave_up,
    }
}

/// What an attempt on `kind` that came to `outcome` leads to. `wait_ms`: the retry's
/// backoff (the policy's with jitter, or the provider's own wait when longer);
/// `done_devices`: the push devices now done with.
pub fn after(
    policy: &Policy,
    f: &Facts<'_>,
    kind: ChannelKind,
    outcome: Outcome,
    wait_ms: impl FnOnce(u32) -> i64,
    done_devices: Vec<String>,
) -> Next {
    let (message, now) = (f.message, f.now);
    let mut st = JobState {
        tried: true,
        ..f.state.clone()
    };
    if kind == ChannelKind::Push {
        st.done_devices = done_devices;
    }
    let channels = message.channels_of(&st.phase).len();
    let attempt_no = st.channel_attempt + 1;
    if kind == ChannelKind::InApp
        && let Some(until) = escalation::awaits(message.escalate.as_ref(), &st.phase, outcome, now)
    {
        if outcome == Outcome::Acked {
            st.best = better(st.best, (RecipientStatus::Delivered, kind));
        }
        return Next::Wait(JobState {
            phase: Phase::Awaiting { until },
            due_at: until,
            ..st
        });
    }
    match outcome {
        Outcome::Acked | Outcome::Sent => {
            let status = if outcome == Outcome::Acked {
                RecipientStatus::Delivered
            } else {
                RecipientStatus::Sent
            };
            // Escalation channels are all tried only under strategy `all`; the first that
            // works ends an escalation like a fallback.
            if message.strategy == Strategy::Fallback {
                return Next::Finish {
                    status,
                    channel: Some(kind),
                };
            }
            st.best = better(st.best, (status, kind));
            go_on(&st, channels, None, now)
        }
        Outcome::TransientError if attempt_no < policy.retry.attempts => {
            st.channel_attempt = attempt_no;
            st.due_at = now.saturating_add(wait_ms(attempt_no));
            Next::Retry(st)
        }
        Outcome::TransientError => go_on(&st, channels, Some(attempt_no), now),
        Outcome::Offline
        | Outcome::AckTimeout
        | Outcome::PermanentError
        | Outcome::Skipped
        | Outcome::Deferred
        | Outcome::Unread => go_on(&st, channels, None, now),
    }
}

/// For strategy `all`: delivered beats sent; otherwise the first success stays.
pub fn better(
    best: Option<(RecipientStatus, ChannelKind)>,
    new: (RecipientStatus, ChannelKind),
) -> Option<(RecipientStatus, ChannelKind)> {
    match best {
        Some((RecipientStatus::Sent, _)) if new.0 == RecipientStatus::Delivered => Some(new),
        Some(b) => Some(b),
        None => Some(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelKind::*;
    use herald_common::api::{Escalate, EscalateUnless};
    use herald_engine::store::RecipientRecord;
    use std::time::Duration;

    /// 2026-12-01T12:00:00Z.
    const NOON: i64 = 1_796_126_400_000;

    fn policy() -> Policy {
        Policy {
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
            },
            critical: vec!["security".into()],
            quiet_hours: None,
            timezone: "UTC".into(),
            caps: vec![CapConfig {
                category: "promo".into(),
                per_user: 2,
                window_s: 86_400,
            }],
        }
    }

    fn message(channels: &[ChannelKind]) -> MessageRecord {
        MessageRecord {
            id: "m1".into(),
            created_at: NOON,
            priority: Priority::Normal,
            strategy: Strategy::Fallback,
            channels: channels.to_vec(),
            ack_timeout_ms: 5000,
            expires_at: None,
            title: Some("t".into()),
            body: None,
            data: None,
            email: None,
            sms: None,
            push: None,
            chat: None,
            template: None,
            locale: None,
            category: None,
            send_at: None,
            cancel_key: None,
            escalate: None,
            sender: None,
            recipients: vec![RecipientRecord {
                user_id: "ann".into(),
                email: None,
                phone: None,
            }],
        }
    }

    fn profile(v: serde_json::Value) -> UserProfile {
        serde_json::from_value(v).unwrap()
    }

    fn facts<'a>(
        m: &'a MessageRecord,
        st: &'a JobState,
        p: Option<&'a UserProfile>,
        now: i64,
    ) -> Facts<'a> {
        Facts {
            now,
            message: m,
            state: st,
            profile: p,
            receipts: None,
        }
    }

    fn next_state(step: Step) -> JobState {
        match step {
            Step::Move {
                next: Next::Go { state, .. } | Next::Wait(state) | Next::Retry(state),
                ..
            } => state,
            other => panic!("not a move: {other:?}"),
        }
    }

    #[test]
    fn a_plain_message_attempts_its_first_channel() {
        let m = message(&[InApp, Email]);
        let st = JobState::start(0, NOON);
        assert_eq!(
            plan(&policy(), &facts(&m, &st, None, NOON)),
            Step::Attempt(InApp)
        );
    }

    #[test]
    fn expiry_comes_first_but_keeps_an_in_app_delivery() {
        let mut m = message(&[InApp, Email]);
        m.expires_at = Some(NOON);
        let st = JobState::start(0, NOON);
        assert_eq!(
            plan(&policy(), &facts(&m, &st, None, NOON)),
            finish(None, RecipientStatus::Expired, None)
        );
        let waiting = JobState {
            phase: Phase::Awaiting { until: NOON + 1 },
            best: Some((RecipientStatus::Delivered, InApp)),
            ..st
        };
        assert_eq!(
            plan(&policy(), &facts(&m, &waiting, None, NOON)),
            finish(None, RecipientStatus::Delivered, Some(InApp))
        );
    }

    #[test]
    fn opt_outs_skip_a_channel_unless_the_category_is_critical() {
        let p = profile(serde_json::json!({"categories": {"marketing": {"email": false}}}));
        let mut m = message(&[Email, Sms]);
        m.category = Some("marketing".into());
        let st = JobState::start(0, NOON);
        match plan(&policy(), &facts(&m, &st, Some(&p), NOON)) {
            Step::Move {
                note: Some(note),
                next: Next::Go {
                    state, fallback, ..
                },
            } => {
                assert_eq!((note.channel, note.outcome), (Email, Outcome::Skipped));
                assert_eq!(note.detail, "opted out of marketing on email");
                assert_eq!(state.channel_idx, 1);
                assert!(fallback);
            }
            other => panic!("{other:?}"),
        }
        m.category = Some("security".into());
        let mut p2 = p.clone();
        p2.categories
            .insert("security".into(), [("email".to_string(), false)].into());
        assert_eq!(
            plan(&policy(), &facts(&m, &st, Some(&p2), NOON)),
            Step::Attempt(Email)
        );
    }

    #[test]
    fn a_recipient_who_opted_out_of_everything_is_skipped_not_failed() {
        let m = message(&[Email]);
        let st = JobState {
            channel_idx: 1,
            ..JobState::start(0, NOON)
        };
        assert_eq!(
            plan(&policy(), &facts(&m, &st, None, NOON)),
            finish(None, RecipientStatus::Skipped, None)
        );
        let tried = JobState { tried: true, ..st };
        assert_eq!(
            plan(&policy(), &facts(&m, &tried, None, NOON)),
            finish(None, RecipientStatus::Failed, None)
        );
    }

    #[test]
    fn quiet_hours_defer_offline_channels_of_normal_non_critical_messages_only() {
        // 12:00 UTC is 20:00 in Shanghai: inside 19:00-08:00, which ends at 00:00 UTC.
        let p = profile(
            serde_json::json!({"timezone": "Asia/Shanghai", "quiet_hours": {"start": "19:00", "end": "08:00"}}),
        );
        let m = message(&[InApp, Email]);
        let st = JobState::start(0, NOON);
        assert_eq!(
            plan(&policy(), &facts(&m, &st, Some(&p), NOON)),
            Step::Attempt(InApp),
            "in_app is never deferred"
        );
        let on_email = JobState {
            channel_idx: 1,
            ..st.clone()
        };
        match plan(&policy(), &facts(&m, &on_email, Some(&p), NOON)) {
            Step::Move {
                note: Some(note),
                next: Next::Wait(state),
            } => {
                assert_eq!(note.outcome, Outcome::Deferred);
                assert_eq!(state.due_at, NOON + 12 * 3_600_000);
                assert!(
                    note.detail.contains("2026-12-02T00:00:00"),
                    "{}",
                    note.detail
                );
            }
            other => panic!("{other:?}"),
        }
        let mut high = m.clone();
        high.priority = Priority::High;
        assert_eq!(
            plan(&policy(), &facts(&high, &on_email, Some(&p), NOON)),
            Step::Attempt(Email)
        );
        let mut critical = m.clone();
        critical.category = Some("security".into());
        assert_eq!(
            plan(&policy(), &facts(&critical, &on_email, Some(&p), NOON)),
            Step::Attempt(Email)
        );
        // Outside the window (16:00 Shanghai): at once.
        let earlier = NOON - 4 * 3_600_000;
        assert_eq!(
            plan(&policy(), &facts(&m, &on_email, Some(&p), earlier)),
            Step::Attempt(Email)
        );
        // The configured default applies to profiles without their own.
        let mut pol = policy();
        pol.quiet_hours = Some(QuietHours::parse_range("11:00-13:00").unwrap());
        assert!(matches!(
            plan(&pol, &facts(&m, &on_email, None, NOON)),
            Step::Move {
                next: Next::Wait(_),
                ..
            }
        ));
    }

    #[test]
    fn caps_are_taken_once_before_the_first_step() {
        let mut m = message(&[InApp, Email]);
        m.category = Some("promo".into());
        let st = JobState::start(0, NOON);
        assert_eq!(
            plan(&policy(), &facts(&m, &st, None, NOON)),
            Step::TakeCap {
                key: "cap:promo:ann".into(),
                per_user: 2,
                window_ms: 86_400_000
            }
        );
        let taken = JobState {
            cap_taken: true,
            ..st.clone()
        };
        assert_eq!(
            plan(&policy(), &facts(&m, &taken, None, NOON)),
            Step::Attempt(InApp)
        );
        let cap = &policy().caps[0];
        match capped(&facts(&m, &st, None, NOON), cap) {
            Step::Move {
                note: Some(note),
                next: Next::Finish { status, .. },
            } => {
                assert_eq!(status, RecipientStatus::Skipped);
                assert!(note.detail.starts_with("frequency cap"));
            }
            other => panic!("{other:?}"),
        }
    }

    fn escalating(unless: EscalateUnless) -> MessageRecord {
        let mut m = message(&[InApp]);
        m.escalate = Some(Escalate {
            after_s: 600,
            unless,
            channels: vec![Email],
        });
        m
    }

    #[test]
    fn an_acked_in_app_delivery_waits_for_a_read_then_escalates() {
        let m = escalating(EscalateUnless::Read);
        let st = JobState::start(0, NOON);
        let next = after(
            &policy(),
            &facts(&m, &st, None, NOON),
            InApp,
            Outcome::Acked,
            |_| 0,
            vec![],
        );
        let Next::Wait(waiting) = next else {
            panic!("{next:?}")
        };
        assert_eq!(
            waiting.phase,
            Phase::Awaiting {
                until: NOON + 600_000
            }
        );
        assert_eq!(waiting.due_at, NOON + 600_000);
        assert_eq!(waiting.best, Some((RecipientStatus::Delivered, InApp)));
        // Due: the receipts are read first.
        let due = NOON + 600_000;
        let f = facts(&m, &waiting, None, due);
        assert_eq!(plan(&policy(), &f), Step::LoadReceipts);
        // Read in time: delivered, nothing more.
        let read = Facts {
            receipts: Some(Receipts {
                read_at: Some(NOON + 5),
                acked_at: Some(NOON + 1),
            }),
            ..f
        };
        assert_eq!(
            plan(&policy(), &read),
            finish(None, RecipientStatus::Delivered, Some(InApp))
        );
        // Acked, never read: unread, then the escalation's channels.
        let unread = Facts {
            receipts: Some(Receipts {
                read_at: None,
                acked_at: Some(NOON + 1),
            }),
            ..f
        };
        let step = plan(&policy(), &unread);
        let Step::Move {
            note: Some(note), ..
        } = &step
        else {
            panic!("{step:?}")
        };
        assert_eq!((note.channel, note.outcome), (InApp, Outcome::Unread));
        let escalated = next_state(step);
        assert_eq!(
            (escalated.phase.clone(), escalated.channel_idx),
            (Phase::Escalated, 0)
        );
        let f = facts(&m, &escalated, None, due);
        assert_eq!(plan(&policy(), &f), Step::Attempt(Email));
        assert_eq!(
            after(&policy(), &f, Email, Outcome::Sent, |_| 0, vec![]),
            Next::Finish {
                status: RecipientStatus::Sent,
                channel: Some(Email)
            }
        );
        // Woken before the deadline (a redelivery): back to waiting.
        let early = Facts {
            now: NOON + 1000,
            receipts: Some(Receipts::default()),
            ..facts(&m, &waiting, None, NOON)
        };
        assert!(
            matches!(plan(&policy(), &early), Step::Move { next: Next::Wait(s), .. } if s.due_at == NOON + 600_000)
        );
    }

    #[test]
    fn escalation_unless_ack_waits_after_an_ack_timeout_only() {
        let m = escalating(EscalateUnless::Ack);
        let st = JobState::start(0, NOON);
        let f = facts(&m, &st, None, NOON);
        assert_eq!(
            after(&policy(), &f, InApp, Outcome::Acked, |_| 0, vec![]),
            Next::Finish {
                status: RecipientStatus::Delivered,
                channel: Some(InApp)
            }
        );
        assert!(matches!(
            after(&policy(), &f, InApp, Outcome::AckTimeout, |_| 0, vec![]),
            Next::Wait(JobState {
                phase: Phase::Awaiting { .. },
                best: None,
                ..
            })
        ));
        // Offline: the message's own channels, no wait.
        assert!(matches!(
            after(&policy(), &f, InApp, Outcome::Offline, |_| 0, vec![]),
            Next::Go { .. }
        ));
        // A late ack counts.
        let waiting = JobState {
            phase: Phase::Awaiting { until: NOON },
            ..st
        };
        let late = Facts {
            receipts: Some(Receipts {
                read_at: None,
                acked_at: Some(NOON - 1),
            }),
            ..facts(&m, &waiting, None, NOON)
        };
        assert_eq!(
            plan(&policy(), &late),
            finish(None, RecipientStatus::Delivered, Some(InApp))
        );
    }

    #[test]
    fn transient_errors_retry_with_backoff_then_fall_back() {
        let m = message(&[Email, Sms]);
        let st = JobState::start(0, NOON);
        let f = facts(&m, &st, None, NOON);
        let next = after(
            &policy(),
            &f,
            Email,
            Outcome::TransientError,
            |n| n as i64 * 1000,
            vec![],
        );
        let Next::Retry(retry) = next else {
            panic!("{next:?}")
        };
        assert_eq!((retry.channel_attempt, retry.due_at), (1, NOON + 1000));
        let last = JobState {
            channel_attempt: 2,
            ..st
        };
        let f = facts(&m, &last, None, NOON);
        match after(&policy(), &f, Email, Outcome::TransientError, |_| 0, vec![]) {
            Next::Go {
                state,
                gave_up,
                fallback,
            } => {
                assert_eq!((state.channel_idx, state.channel_attempt), (1, 0));
                assert_eq!(gave_up, Some(3));
                assert!(fallback && state.tried);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strategy_all_goes_through_every_channel_and_keeps_the_best() {
        let mut m = message(&[Email, InApp]);
        m.strategy = Strategy::All;
        let st = JobState::start(0, NOON);
        let f = facts(&m, &st, None, NOON);
        let Next::Go {
            state, fallback, ..
        } = after(&policy(), &f, Email, Outcome::Sent, |_| 0, vec![])
        else {
            panic!()
        };
        assert!(!fallback, "a success is not a fallback");
        let f = facts(&m, &state, None, NOON);
        let Next::Go { state, .. } = after(&policy(), &f, InApp, Outcome::Acked, |_| 0, vec![])
        else {
            panic!()
        };
        assert_eq!(
            plan(&policy(), &facts(&m, &state, None, NOON)),
            finish(None, RecipientStatus::Delivered, Some(InApp))
        );
    }

    #[test]
    fn delivered_beats_sent_for_strategy_all() {
        use RecipientStatus::*;
        assert_eq!(better(None, (Sent, Email)), Some((Sent, Email)));
        assert_eq!(
            better(Some((Sent, Email)), (Delivered, InApp)),
            Some((Delivered, InApp))
        );
        assert_eq!(
            better(Some((Sent, Email)), (Sent, Sms)),
            Some((Sent, Email))
        );
    }
}
