//! When a cron expression fires, in a time zone, with deliberate daylight-saving semantics.
//!
//! A cron expression names *wall-clock* times. We walk the expression over naive local times
//! (the `cron` crate iterating a fake-UTC calendar, so it never applies offsets itself) and map
//! each local time to one instant:
//!
//! - **Gap** (spring forward; in Europe/Helsinki 03:00–03:59 does not exist on the last Sunday
//!   of March): the slot fires at the first instant after the gap (04:00 local). A daily 03:30
//!   job still runs that day, one wall-clock half hour late. Several slots inside one gap (and a
//!   slot at the end of the gap) collapse into that one instant and fire once.
//! - **Repeat** (fall back; 03:00–03:59 happens twice on the last Sunday of October): each
//!   local time fires once, at its first occurrence (the summer-time one). The second pass of
//!   the repeated hour fires nothing.
//!
//! Schedules that must keep a fixed interval across DST changes should use `UTC`.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a cron expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason} (expected 6 or 7 fields with seconds first, e.g. \"0 */5 * * * *\")")]
    Cron {
        /// The expression.
        expr: String,
        /// The parser's words.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error(
        "unknown time zone {0:?} (expected an IANA name such as \"Europe/Helsinki\" or \"UTC\")"
    )]
    TimeZone(String),
    /// The expression never fires after now.
    #[error("cron expression {0:?} has no upcoming slot")]
    NoUpcoming(String),
}

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct SlotSchedule {
    cron: cron::Schedule,
    tz: Tz,
}

/// Longest local-time walk while skipping slots already passed in a repeated hour or collapsed
/// into a gap (an every-second schedule crosses at most one repeated hour: 3,600 slots).
const MAX_SKIP: usize = 10_000;

impl SlotSchedule {
    /// Parses a cron expression (with seconds) and an IANA time zone.
    pub fn parse(expr: &str, time_zone: &str) -> Result<SlotSchedule, SlotError> {
        let tz = parse_tz(time_zone)?;
        let cron = cron::Schedule::from_str(expr).map_err(|e| SlotError::Cron {
            expr: expr.chars().take(200).collect(),
            reason: e.to_string(),
        })?;
        Ok(SlotSchedule { cron, tz })
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Walking from `after`'s own local time is enough: a slot in a gap maps forward to the
        // gap's end, which is after `after` only if `after`'s local time is before the gap.
        // In a repeated hour's second pass the walk skips slots whose first occurrence passed.
        let local = after.with_timezone(&self.tz).naive_local();
        let start = Utc.from_utc_datetime(&local);
        self.cron
            .after(&start)
            .take(MAX_SKIP)
            .map(|fake| to_instant(self.tz, fake.naive_utc()))
            .find(|instant| *instant > after)
    }

    /// Slots in `(after, until]`, at most `limit` of them (the count of slots beyond is not
    /// needed by callers: they saturate).
    pub fn between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(slot) if slot <= until => {
                    out.push(slot);
                    cursor = slot;
                }
                _ => break,
            }
        }
        out
    }
}

/// Parses an IANA time zone name.
pub(crate) fn parse_tz(name: &str) -> Result<Tz, SlotError> {
    Tz::from_str(name).map_err(|_| SlotError::TimeZone(name.chars().take(80).collect()))
}

/// Maps a local wall-clock time to the instant it fires at (see the module docs).
pub(crate) fn to_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        // Fall back: the first occurrence.
        LocalResult::Ambiguous(first, second) => {
            first.with_timezone(&Utc).min(second.with_timezone(&Utc))
        }
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant whose local time is at or after `local`, for a `local` inside a gap.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // Gaps are at most a few hours long. Every instant before `lo` shows a local time before
    // `local`, every instant from `hi` on shows one after it; bisect by the second.
    let mut lo = (local - chrono::Duration::hours(26)).and_utc().timestamp();
    let mut hi = (local + chrono::Duration::hours(26)).and_utc().timestamp();
    let shows_at_or_after = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .is_none_or(|t| t.with_timezone(&tz).naive_local() >= local)
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shows_at_or_after(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn local(d: (i32, u32, u32), h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(d.0, d.1, d.2)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    #[test]
    fn rejects_bad_cron_and_unknown_zone_with_reasons() {
        let err = SlotSchedule::parse("not cron", "UTC").unwrap_err();
        assert!(err.to_string().contains("invalid cron expression"), "{err}");
        let err = SlotSchedule::parse("0 * * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(err, SlotError::TimeZone("Mars/Olympus".into()));
        assert!(SlotSchedule::parse("0 */5 * * * *", "Europe/Helsinki").is_ok());
    }

    #[test]
    fn plain_days_follow_the_zone_offset() {
        // Helsinki is UTC+2 in January.
        let s = SlotSchedule::parse("0 30 3 * * *", "Europe/Helsinki").unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-10T00:00:00Z")),
            Some(utc("2026-01-10T01:30:00Z"))
        );
        // Exactly at a slot: the next one, not the same.
        assert_eq!(
            s.next_after(utc("2026-01-10T01:30:00Z")),
            Some(utc("2026-01-11T01:30:00Z"))
        );
    }

    #[test]
    fn spring_forward_gap_fires_at_the_first_instant_after_the_gap() {
        // 2026-03-29: Helsinki jumps from 03:00 EET (01:00Z) to 04:00 EEST; 03:30 does not exist.
        let s = SlotSchedule::parse("0 30 3 * * *", "Europe/Helsinki").unwrap();
        let day_before = s.next_after(utc("2026-03-28T00:00:00Z"));
        assert_eq!(day_before, Some(utc("2026-03-28T01:30:00Z")));
        let gap_day = s.next_after(utc("2026-03-28T01:30:00Z"));
        assert_eq!(gap_day, Some(utc("2026-03-29T01:00:00Z")), "04:00 EEST");
        let day_after = s.next_after(utc("2026-03-29T01:00:00Z"));
        assert_eq!(day_after, Some(utc("2026-03-30T00:30:00Z")), "03:30 EEST");
        assert_eq!(
            to_instant(Tz::Europe__Helsinki, local((2026, 3, 29), 3, 30)),
            utc("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn slots_inside_a_gap_collapse_with_the_slot_at_its_end() {
        // Every 30 minutes: 03:00 and 03:30 fall in the gap, 04:00 is its end: one firing.
        let s = SlotSchedule::parse("0 0,30 * * * *", "Europe/Helsinki").unwrap();
        let slots = s.between(
            utc("2026-03-29T00:00:00Z"),
            utc("2026-03-29T02:00:00Z"),
            100,
        );
        assert_eq!(
            slots,
            vec![
                utc("2026-03-29T00:30:00Z"), // 02:30 EET
                utc("2026-03-29T01:00:00Z"), // 03:00, 03:30 (gap) and 04:00 EEST, once
                utc("2026-03-29T01:30:00Z"), // 04:30 EEST
                utc("2026-03-29T02:00:00Z"), // 05:00 EEST
            ]
        );
    }

    #[test]
    fn fall_back_repeat_fires_once_at_the_first_occurrence() {
        // 2026-10-25: Helsinki goes from 04:00 EEST (01:00Z) back to 03:00 EET; 03:30 happens
        // at 00:30Z (EEST) and again at 01:30Z (EET).
        let s = SlotSchedule::parse("0 30 3 * * *", "Europe/Helsinki").unwrap();
        let slots = s.between(
            utc("2026-10-24T12:00:00Z"),
            utc("2026-10-26T12:00:00Z"),
            100,
        );
        assert_eq!(
            slots,
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // Asking from inside the second pass does not go back to the first one.
        assert_eq!(
            s.next_after(utc("2026-10-25T01:10:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn repeated_hour_second_pass_fires_nothing_for_interval_schedules() {
        // Every 15 minutes. From 03:50 EEST (00:50Z): 03:00–03:45 already fired in the first
        // pass; when the clock falls back to 03:00 EET (01:00Z) they do not fire again; the
        // next slot is 04:00 EET (02:00Z). Use UTC for a fixed interval.
        let s = SlotSchedule::parse("0 */15 * * * *", "Europe/Helsinki").unwrap();
        let slots = s.between(
            utc("2026-10-25T00:50:00Z"),
            utc("2026-10-25T02:05:00Z"),
            100,
        );
        assert_eq!(slots, vec![utc("2026-10-25T02:00:00Z")]);
        let utc_sched = SlotSchedule::parse("0 */15 * * * *", "UTC").unwrap();
        let slots = utc_sched.between(
            utc("2026-10-25T00:50:00Z"),
            utc("2026-10-25T02:05:00Z"),
            100,
        );
        assert_eq!(slots.len(), 5);
    }

    #[test]
    fn between_respects_the_limit() {
        let s = SlotSchedule::parse("* * * * * *", "UTC").unwrap();
        let t = utc("2026-01-01T00:00:00Z");
        assert_eq!(
            s.between(t, t + chrono::Duration::seconds(100), 10).len(),
            10
        );
        assert_eq!(s.between(t, t + chrono::Duration::seconds(5), 10).len(), 5);
    }
}
