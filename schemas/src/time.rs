//! Decoding the times fleetbus writes, fast.
//!
//! chrono writes a `DateTime<Utc>` as RFC 3339 with a `Z` and up to nine fraction digits
//! (`2026-11-25T03:12:32.123456789Z`). Its general RFC 3339 parser is about a twentieth of an
//! envelope's decode, which a log refold pays once per entry. [`parse_utc`] reads exactly that
//! shape itself and hands anything else (offsets, leap seconds, lower-case separators, more
//! digits) to chrono, so it accepts the same inputs with the same results.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};
use serde::{de, Deserializer};

/// Parses an RFC 3339 date and time as chrono's `DateTime<Utc>` deserializer does.
pub fn parse_utc(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match canonical(s.as_bytes()) {
        Some(t) => Ok(t),
        None => s
            .parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// `deserialize_with` for `DateTime<Utc>` fields: [`parse_utc`] on the string.
pub(crate) fn deserialize_utc<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 date and time")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            parse_utc(s).map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` with a valid date and no leap second, else `None`.
fn canonical(b: &[u8]) -> Option<DateTime<Utc>> {
    let (&b'Z', b) = b.split_last()? else {
        return None;
    };
    if b.len() < 19 {
        return None;
    }
    let (head, fraction) = b.split_at(19);
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| head[i] != c) {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            number(digits)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let second = number(&head[17..19])?;
    if second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(number(&head[0..4])?).ok()?,
        number(&head[5..7])?,
        number(&head[8..10])?,
    )?;
    let time = NaiveTime::from_hms_nano_opt(
        number(&head[11..13])?,
        number(&head[14..16])?,
        second,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{SecondsFormat, TimeZone};

    fn chrono_parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        s.parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn times_as_chrono_writes_them_parse_to_the_same_instant() {
        // A small deterministic generator: no extra dependency for one test.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let secs = (next() % 253_402_300_799) as i64; // 1970 … 9999
            let nanos = match i % 4 {
                0 => 0,
                1 => (next() % 1000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1000,
                _ => (next() % 1_000_000_000) as u32,
            };
            let t = Utc.timestamp_opt(secs, nanos).single().expect("in range");
            // What serde writes, and every fixed precision.
            let written: String =
                serde_json::from_value(serde_json::to_value(t).expect("json")).expect("a string");
            for s in [
                written,
                t.to_rfc3339_opts(SecondsFormat::Secs, true),
                t.to_rfc3339_opts(SecondsFormat::Millis, true),
                t.to_rfc3339_opts(SecondsFormat::Nanos, true),
            ] {
                assert!(canonical(s.as_bytes()).is_some(), "{s} takes the slow path");
                assert_eq!(parse_utc(&s), chrono_parse(&s), "{s}");
            }
        }
    }

    #[test]
    fn every_other_shape_gets_chronos_answer() {
        let long = "9".repeat(10_000);
        for s in [
            "",
            "Z",
            "2026-11-25T03:12:32",
            "2026-11-25T03:12:32z",
            "2026-11-25t03:12:32Z",
            "2026-11-25 03:12:32Z",
            "2026-11-25T03:12:32+01:00",
            "2026-11-25T03:12:32-00:00",
            "2026-11-25T23:59:60Z",
            "2026-11-25T23:59:60.5Z",
            "2026-11-25T24:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "+2026-11-25T03:12:32Z",
            "2026-11-25T03:12:32.Z",
            "2026-11-25T03:12:32.1234567891Z",
            "2026-11-25T03:12:32.-1Z",
            "2026-11-25T03:12:32.12a4Z",
            "2026-1a-25T03:12:32Z",
            "２０２６-11-25T03:12:32Z",
            "2026-11-25T03:12:32ZZ",
            long.as_str(),
        ] {
            assert_eq!(parse_utc(s), chrono_parse(s), "{s:?}");
        }
    }
}
