//! Quiet hours (SPEC §9): a daily window in the user's IANA time zone during which offline
//! channels wait for messages that are neither `high` priority nor of a critical category.
//! Pure: the instant is an argument, so DST edges are tested with fixed instants.
//!
//! A window is `[start, end)` in local wall-clock minutes and may cross midnight. Its end is
//! the next wall-clock `end` after now, turned into an instant with jiff's compatible
//! disambiguation (an end in a DST gap is the first instant after the gap; one in a fold,
//! the earlier of the two, unless that is already past).

use herald_common::api::QuietHours;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// If `now_ms` falls inside `window` in time zone `tz`, the instant (Unix ms) it ends.
pub fn window_end(window: &QuietHours, tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let (start, end) = window.window().ok()?;
    if start == end {
        return None;
    }
    let now = Timestamp::from_millisecond(now_ms).ok()?;
    let local = now.to_zoned_datetime(tz.clone());
    let minute = local.hour() as u32 * 60 + local.minute() as u32;
    let (inside, end_day) = if start < end {
        (start <= minute && minute < end, local.date())
    } else if minute >= start {
        (true, local.date().tomorrow().ok()?)
    } else {
        (minute < end, local.date())
    };
    if !inside {
        return None;
    }
    end_instant(tz, end_day, end, now_ms)
}

/// The first instant at or after wall-clock `minute` of `day` (or the next day's, if that
/// is not after `now_ms`).
fn end_instant(tz: &TimeZone, day: Date, minute: u32, now_ms: i64) -> Option<i64> {
    let at = |day: Date| {
        let civil = day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
        let ambiguous = tz.to_ambiguous_zoned_datetime(civil);
        let first = ambiguous
            .clone()
            .compatible()
            .ok()?
            .timestamp()
            .as_millisecond();
        if first > now_ms {
            return Some(first);
        }
        // In a fold the earlier instant may have passed while the later has not.
        let later = ambiguous.later().ok()?.timestamp().as_millisecond();
        (later > now_ms).then_some(later)
    };
    at(day).or_else(|| at(day.tomorrow().ok()?))
}

/// The time zone of a profile's name (already validated), else the default.
pub fn zone(name: Option<&str>, default: &str) -> TimeZone {
    name.and_then(|n| TimeZone::get(n).ok())
        .or_else(|| TimeZone::get(default).ok())
        .unwrap_or(TimeZone::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn q(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
        }
    }

    /// Unix ms of a wall-clock time in `tz` (the earlier instant in a fold).
    fn at(tz: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
        let tz = TimeZone::get(tz).unwrap();
        tz.to_ambiguous_zoned_datetime(date(y, mo, d).at(h, mi, 0, 0))
            .compatible()
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    fn end_local(tz: &str, ms: i64) -> String {
        Timestamp::from_millisecond(ms)
            .unwrap()
            .to_zoned_datetime(TimeZone::get(tz).unwrap())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    #[test]
    fn a_window_across_midnight_ends_the_next_morning() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let w = q("22:00", "08:00");
        let late = at("Asia/Shanghai", 2026, 12, 1, 23, 30);
        assert_eq!(
            end_local("Asia/Shanghai", window_end(&w, &tz, late).unwrap()),
            "2026-12-02 08:00 CST"
        );
        let early = at("Asia/Shanghai", 2026, 12, 2, 3, 0);
        assert_eq!(
            end_local("Asia/Shanghai", window_end(&w, &tz, early).unwrap()),
            "2026-12-02 08:00 CST"
        );
        assert_eq!(
            window_end(&w, &tz, at("Asia/Shanghai", 2026, 12, 2, 8, 0)),
            None,
            "the end is outside"
        );
        assert_eq!(
            window_end(&w, &tz, at("Asia/Shanghai", 2026, 12, 2, 21, 59)),
            None
        );
        assert!(
            window_end(&w, &tz, at("Asia/Shanghai", 2026, 12, 2, 22, 0)).is_some(),
            "the start is inside"
        );
    }

    #[test]
    fn a_window_within_a_day() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let w = q("12:00", "14:00");
        let noon = at("Europe/Berlin", 2026, 7, 1, 13, 15);
        assert_eq!(
            end_local("Europe/Berlin", window_end(&w, &tz, noon).unwrap()),
            "2026-07-01 14:00 CEST"
        );
        assert_eq!(
            window_end(&w, &tz, at("Europe/Berlin", 2026, 7, 1, 11, 0)),
            None
        );
        assert_eq!(
            window_end(&q("09:00", "09:00"), &tz, noon),
            None,
            "start = end: none"
        );
    }

    #[test]
    fn new_york_spring_forward() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; the night lasts an hour less.
        let tz = TimeZone::get("America/New_York").unwrap();
        let w = q("22:00", "07:00");
        let before = at("America/New_York", 2026, 3, 7, 23, 0);
        let end = window_end(&w, &tz, before).unwrap();
        assert_eq!(end_local("America/New_York", end), "2026-03-08 07:00 EDT");
        assert_eq!(
            end - before,
            7 * 3_600_000,
            "eight wall-clock hours, seven real ones"
        );
    }

    #[test]
    fn new_york_fall_back() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let tz = TimeZone::get("America/New_York").unwrap();
        let w = q("22:00", "07:00");
        let before = at("America/New_York", 2026, 10, 31, 23, 0);
        let end = window_end(&w, &tz, before).unwrap();
        assert_eq!(end_local("America/New_York", end), "2026-11-01 07:00 EST");
        assert_eq!(
            end - before,
            9 * 3_600_000,
            "eight wall-clock hours, nine real ones"
        );
        // A window ending inside the fold, asked during the second 01:10: the earlier 01:45
        // has passed, the later one has not.
        let fold = q("00:30", "01:45");
        let second_pass = at("America/New_York", 2026, 11, 1, 0, 40) + 90 * 60_000; // 01:10 EST
        let end = window_end(&fold, &tz, second_pass).unwrap();
        assert!(end > second_pass);
        assert_eq!(end_local("America/New_York", end), "2026-11-01 01:45 EST");
    }

    #[test]
    fn a_window_that_starts_in_the_gap() {
        // 02:30 does not exist on 2026-03-08 in New York: the window holds from the jump.
        let tz = TimeZone::get("America/New_York").unwrap();
        let w = q("02:30", "06:00");
        let just_after = at("America/New_York", 2026, 3, 8, 3, 5);
        assert_eq!(
            end_local("America/New_York", window_end(&w, &tz, just_after).unwrap()),
            "2026-03-08 06:00 EDT"
        );
        assert_eq!(
            window_end(&w, &tz, at("America/New_York", 2026, 3, 8, 1, 59)),
            None
        );
        // And one that ends in it: it ends at the first instant after the gap.
        let ends_in_gap = q("01:00", "02:30");
        let end = window_end(&ends_in_gap, &tz, at("America/New_York", 2026, 3, 8, 1, 30)).unwrap();
        assert_eq!(end_local("America/New_York", end), "2026-03-08 03:30 EDT");
    }
}
