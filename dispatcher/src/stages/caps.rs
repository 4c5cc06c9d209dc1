//! Frequency caps (SPEC §9): at most `per_user` messages of a category per user per
//! `window_s` (`[[caps]]` in herald.toml). The count is a slot per message in a sliding
//! window shared by every dispatcher ([`herald_engine::Slots`]), taken once per recipient
//! (a retry or a restart takes the same slot).

use herald_common::config::CapConfig;

/// The cap on a category, if one is configured.
pub fn cap_for<'a>(caps: &'a [CapConfig], category: Option<&str>) -> Option<&'a CapConfig> {
    let category = category?;
    caps.iter().find(|c| c.category == category)
}

/// The slot key of a cap for one user.
pub fn slot_key(cap: &CapConfig, user_id: &str) -> String {
    format!("cap:{}:{user_id}", cap.category)
}

/// The attempt detail of a capped message.
pub fn detail(cap: &CapConfig) -> String {
    format!(
        "frequency cap: {} {} per {} s",
        cap.per_user, cap.category, cap.window_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_found_by_category() {
        let caps = vec![CapConfig {
            category: "marketing".into(),
            per_user: 3,
            window_s: 86400,
        }];
        assert_eq!(
            cap_for(&caps, Some("marketing")).map(|c| c.per_user),
            Some(3)
        );
        assert!(cap_for(&caps, Some("billing")).is_none());
        assert!(cap_for(&caps, None).is_none());
        assert_eq!(slot_key(&caps[0], "ann"), "cap:marketing:ann");
        assert!(detail(&caps[0]).starts_with("frequency cap"));
    }
}
