//! The two kinds of time a Chef report carries, as seconds since the Unix epoch: Ruby's
//! `Time#to_s` in the report (`2026-11-20 10:00:00 +0000`), and the `%Y%m%d%H%M%S` stamp in the
//! report's file name.
//!
//! Hand-written rather than a date crate: two fixed formats do not justify a dependency in the
//! plugin. The file-name stamp is the Chef client's local time with no zone; the sandbox has no
//! time zone database either, so it is read as if it were UTC, which is only ever used to order
//! files (see `listing`).

/// Seconds since the Unix epoch of Ruby's `Time#to_s` (`%Y-%m-%d %H:%M:%S %z`). Also accepts
/// what other serializers make of a time: a `T` separator, fractional seconds, `Z`, `UTC` and
/// `+hh:mm` offsets. `None` when it is none of those or has no zone.
pub fn parse_ruby_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_at_checked(10)?;
    let rest = rest.strip_prefix([' ', 'T'])?;
    let (time, zone) = rest.split_at_checked(8)?;
    let utc = civil_date(date)?.checked_add(clock_time(time)?)?;
    // Fractions of a second are dropped: events have whole seconds.
    let zone = match zone.strip_prefix('.') {
        Some(fraction) => fraction.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => zone,
    };
    utc.checked_sub(zone_offset(zone.trim_start())?)
}

/// Seconds since the Unix epoch of a `YYYYMMDDHHMMSS` stamp, read as UTC.
pub fn parse_compact_stamp(stamp: &str) -> Option<i64> {
    if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| stamp[range].parse::<u32>().ok();
    let days = days_from_civil(i64::from(field(0..4)?), field(4..6)?, field(6..8)?)?;
    let seconds = seconds_of_day(field(8..10)?, field(10..12)?, field(12..14)?)?;
    Some(days * 86_400 + seconds)
}

/// `YYYY-MM-DD` to seconds since the epoch at midnight UTC.
fn civil_date(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let year = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month = parts.next().filter(|m| m.len() == 2)?.parse().ok()?;
    let day = parts.next().filter(|d| d.len() == 2)?.parse().ok()?;
    Some(days_from_civil(year, month, day)? * 86_400)
}

/// `HH:MM:SS` to seconds since midnight.
fn clock_time(time: &str) -> Option<i64> {
    let mut parts = time.splitn(3, ':');
    let mut next = || parts.next().filter(|p| p.len() == 2)?.parse::<u32>().ok();
    seconds_of_day(next()?, next()?, next()?)
}

fn seconds_of_day(hour: u32, minute: u32, second: u32) -> Option<i64> {
    // 60 is a leap second, which Ruby prints too.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(i64::from(hour * 3600 + minute * 60 + second))
}

/// `+0000`, `-05:00`, `Z` or `UTC` to seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone == "Z" || zone == "UTC" {
        return Some(0);
    }
    let (sign, digits) = match zone.split_at_checked(1)? {
        ("+", digits) => (1, digits),
        ("-", digits) => (-1, digits),
        _ => return None,
    };
    let digits = digits.replacen(':', "", 1);
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`);
/// `None` for a month or day that does not exist.
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_time_to_s_is_read_with_its_offset() {
        assert_eq!(
            parse_ruby_time("2026-11-20 10:00:00 +0000"),
            Some(1_795_168_800)
        );
        assert_eq!(
            parse_ruby_time("2026-11-20 05:00:00 -0500"),
            Some(1_795_168_800)
        );
        assert_eq!(
            parse_ruby_time("2026-11-20 15:30:00 +0530"),
            Some(1_795_168_800)
        );
        assert_eq!(parse_ruby_time("1970-01-01 00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_ruby_time("2024-02-29 23:59:59 +0000"),
            Some(1_709_251_199)
        );
    }

    #[test]
    fn other_serializations_of_a_time_are_accepted() {
        for text in [
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:00:00.123456+00:00",
            "2026-11-20 10:00:00 UTC",
            "2026-11-20T11:00:00+01:00",
        ] {
            assert_eq!(parse_ruby_time(text), Some(1_795_168_800), "{text}");
        }
    }

    #[test]
    fn times_without_a_zone_or_out_of_range_are_not_read() {
        for text in [
            "",
            "2026-11-20 10:00:00",
            "2026-11-20",
            "2026-13-20 10:00:00 +0000",
            "2026-02-30 10:00:00 +0000",
            "2026-11-20 24:00:00 +0000",
            "2026-11-20 10:00:00 +2500",
            "20 Nov 2026 10:00:00 +0000",
            "2026-11-20 10:00:00 EST",
        ] {
            assert_eq!(parse_ruby_time(text), None, "{text}");
        }
    }

    #[test]
    fn compact_stamps_are_read_as_utc() {
        assert_eq!(parse_compact_stamp("20261120100000"), Some(1_795_168_800));
        assert_eq!(parse_compact_stamp("19700101000001"), Some(1));
        assert_eq!(parse_compact_stamp("2026112010000"), None);
        assert_eq!(parse_compact_stamp("20261320100000"), None);
        assert_eq!(parse_compact_stamp("2026112010000x"), None);
    }
}
