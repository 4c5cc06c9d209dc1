//! Preferences (SPEC §9): a user's opt-outs, per channel and per message category on a
//! channel; critical categories (`HERALD_CRITICAL_CATEGORIES`) ignore them.

use herald_common::api::{ChannelKind, UserProfile};

/// Why `channel` is skipped for this user and category, if it is.
pub fn opted_out(
    profile: Option<&UserProfile>,
    category: Option<&str>,
    channel: ChannelKind,
    critical: bool,
) -> Option<String> {
    if critical {
        return None;
    }
    let profile = profile?;
    if !profile.allows(channel) {
        return Some(format!("opted out of {channel}"));
    }
    let category = category?;
    if !profile.allows_category(category, channel) {
        return Some(format!("opted out of {category} on {channel}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(v: serde_json::Value) -> UserProfile {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn opt_outs_by_channel_and_category_and_the_critical_bypass() {
        use ChannelKind::*;
        let p = profile(json!({"preferences": {"sms": false},
            "categories": {"marketing": {"email": false}, "digest": {"*": false, "in_app": true}}}));
        let case = |category: Option<&str>, channel, critical| {
            opted_out(Some(&p), category, channel, critical)
        };
        assert_eq!(case(None, Sms, false).as_deref(), Some("opted out of sms"));
        assert_eq!(
            case(Some("marketing"), Email, false).as_deref(),
            Some("opted out of marketing on email")
        );
        assert_eq!(case(Some("marketing"), Push, false), None);
        assert_eq!(
            case(Some("digest"), Push, false).as_deref(),
            Some("opted out of digest on push"),
            "* covers every channel"
        );
        assert_eq!(
            case(Some("digest"), InApp, false),
            None,
            "a channel's own setting beats *"
        );
        assert_eq!(
            case(Some("marketing"), Email, true),
            None,
            "critical ignores opt-outs"
        );
        assert_eq!(case(None, Sms, true), None);
        assert_eq!(opted_out(None, Some("marketing"), Email, false), None);
    }
}
