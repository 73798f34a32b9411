//! Identities and times: random per-start identities, order ids, and the order time format.
//!
//! An order time is RFC 3339 UTC with milliseconds, `2026-11-24T13:55:06.123Z`: fixed width,
//! so it sorts as text, and [`parse_timestamp`] turns it into milliseconds since the epoch,
//! refusing anything [`timestamp`] would not have written (an impossible date such as
//! `2026-02-30`, an hour 24, a year before 1970). So `timestamp(parse_timestamp(t)?) == t`.
//!
//! An order id is `<12 lower-case hex digits>-<counter>` when an order server draws it (the
//! prefix is random per start, so ids never repeat across servers or restarts; the counter
//! starts at 1). Only such ids enter the store anew ([`check_new_order_id`]: a copy taken
//! for an order, an order from a peer or from the catalog's journal); an `orders.csv`
//! written before that rule may hold any id of 1 to 64 ASCII letters, digits or `-`, which
//! is still read, found and paged ([`check_order_id`]). Ids are ordered by
//! [`cmp_order_ids`]: the part before the last `-` as text, then the counter after it as a
//! number (`ab-9` before `ab-10`); an id without such a counter comes first among those of
//! its prefix. This is the tie-break of orders taken in the same millisecond.

use std::cmp::Ordering;
use std::io::Read;

/// 12 hex digits from the kernel's random source (identities that change at each start).
pub fn random_hex() -> Result<String, crate::storage::StorageError> {
    use crate::storage::At;
    let (mut bytes, path) = ([0u8; 6], std::path::Path::new("/dev/urandom"));
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut bytes)).at(path)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Now as an order time, e.g. `2026-11-24T13:55:06.123Z`.
pub fn timestamp_now() -> String {
    timestamp(now_ms())
}

/// Milliseconds since the epoch as an order time (RFC 3339 UTC with milliseconds).
pub fn timestamp(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// An order time (`2026-11-24T13:55:06.123Z`) as milliseconds since the epoch; refuses any
/// other shape, an impossible date or time, and years before 1970.
pub fn parse_timestamp(at: &str) -> Result<u64, String> {
    let bad = || format!("time {at:?} must be a real UTC time like 2026-11-24T13:55:06.123Z");
    let b = at.as_bytes();
    let shape = b.len() == 24
        && [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')]
            .iter()
            .all(|&(i, c)| b[i] == c);
    if !shape {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Option<u64> {
        b[from..to].iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
    };
    let fields = (num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19), num(20, 23));
    let (Some(year), Some(month), Some(day), Some(h), Some(m), Some(s), Some(milli)) = fields else {
        return Err(bad());
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if year < 1970 || !(1..=month_days).contains(&day) || h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    // Days since 1970-01-01 from the civil date (H. Hinnant's algorithm, the inverse of
    // the one in `timestamp`).
    let (y, mo) = (year as i64 - i64::from(month <= 2), month as i64);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    Ok(((days * 24 + h) * 60 + m) * 60_000 + s * 1000 + milli)
}

/// Checks an order id: 1 to 64 ASCII letters, digits or `-`.
pub fn check_order_id(id: &str) -> Result<(), String> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(format!("order id {id:?} must be 1 to 64 letters, digits or '-'"))
    }
}

/// Checks the id of an order that enters the store anew: exactly the shape an order server
/// draws, `<12 lower-case hex digits>-<counter>`, the counter a decimal number from 1 with
/// no leading zero and at most 19 digits (so it fits 64 bits).
pub fn check_new_order_id(id: &str) -> Result<(), String> {
    let shaped = match id.split_once('-') {
        Some((prefix, counter)) => {
            is_server_prefix(prefix)
                && (1..=19).contains(&counter.len())
                && counter.bytes().all(|b| b.is_ascii_digit())
                && !counter.starts_with('0')
        }
        None => false,
    };
    if shaped {
        Ok(())
    } else {
        Err(format!("order id {id:?} is not one an order server issues (<12 lower-case hex digits>-<counter from 1>)"))
    }
}

/// How far an order's time may be from the clock of the catalog that takes its copy:
/// an order server stamps the order just before it asks, so its time is off only by the
/// two servers' clock skew and a request's delay; a time further off is not an order's.
pub const ORDER_TIME_SKEW_MS: u64 = 5 * 60 * 1000;

/// Checks the time of an order whose copy is being taken now (`now_ms`, milliseconds since
/// the epoch): a real order time ([`parse_timestamp`]) within [`ORDER_TIME_SKEW_MS`] of now.
pub fn check_order_time_near(at: &str, now_ms: u64) -> Result<(), String> {
    let ms = parse_timestamp(at)?;
    if ms.abs_diff(now_ms) > ORDER_TIME_SKEW_MS {
        return Err(format!(
            "order time {at:?} is more than {} minutes from this server's clock ({})",
            ORDER_TIME_SKEW_MS / 60_000,
            timestamp(now_ms)
        ));
    }
    Ok(())
}

/// Now in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_millis() as u64
}

/// An order id split for ordering: the prefix before the last `-`, and the counter after it
/// when that is a decimal number without leading zeros that fits 64 bits; otherwise the
/// whole id and no counter. The split is one-to-one (`(p, Some(n))` is `p-n`, `(p, None)` is
/// `p`), so ids are equal exactly when their splits are.
pub fn split_order_id(id: &str) -> (&str, Option<u64>) {
    if let Some((prefix, tail)) = id.rsplit_once('-') {
        let canonical =
            !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) && (tail == "0" || !tail.starts_with('0'));
        if canonical {
            if let Ok(n) = tail.parse::<u64>() {
                return (prefix, Some(n));
            }
        }
    }
    (id, None)
}

/// Whether `prefix` is one an order server draws: 12 lower-case hex digits.
pub fn is_server_prefix(prefix: &str) -> bool {
    prefix.len() == 12 && prefix.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The order of order ids (the tie-break of orders taken in the same millisecond): prefix
/// as text, then counter as a number, an id without a counter first.
pub fn cmp_order_ids(a: &str, b: &str) -> Ordering {
    split_order_id(a).cmp(&split_order_id(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_874_106_123, "2026-11-28T13:55:06.123Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(timestamp(ms), text);
            assert_eq!(parse_timestamp(text), Ok(ms), "{text}");
        }
        // Every day of a leap cycle and then some, at an odd time of day.
        for day in 0..(366 * 5) {
            let ms = 1_700_000_000_000 + day * 86_400_000 + 45_296_789;
            assert_eq!(parse_timestamp(&timestamp(ms)), Ok(ms));
        }
        assert!(parse_timestamp(&timestamp_now()).is_ok());
    }

    #[test]
    fn impossible_times_are_refused() {
        for bad in [
            "2026-13-45T99:99:99.999Z",
            "2026-02-29T00:00:00.000Z",
            "1900-02-29T00:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-00-10T00:00:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:60:00.000Z",
            "2026-01-01T00:00:60.000Z",
            "1969-12-31T23:59:59.999Z",
            "2026-01-01T00:00:00.000",
            "2026-01-01 00:00:00.000Z",
            "2026-01-01T00:00:00.00Z",
            "2026-01-01T00:00:00.0000Z",
            "+026-01-01T00:00:00.000Z",
            "2026-01-01T00:00:00.-00Z",
            "２026-01-01T00:00:00.000Z",
            "",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_timestamp("2024-02-29T23:59:59.999Z").is_ok());
        assert!(parse_timestamp("2000-02-29T00:00:00.000Z").is_ok());
    }

    #[test]
    fn order_ids() {
        for (id, ok) in [("ab12-1", true), ("x", true), ("x y", false), ("", false), ("a_b", false)] {
            assert_eq!(check_order_id(id).is_ok(), ok, "{id:?}");
        }
        assert!(check_order_id(&"a".repeat(64)).is_ok());
        assert!(check_order_id(&"a".repeat(65)).is_err());
        let splits = [
            ("0a1b2c3d4e5f-17", ("0a1b2c3d4e5f", Some(17))),
            ("ab-0", ("ab", Some(0))),
            ("ab-07", ("ab-07", None)),
            ("ab-", ("ab-", None)),
            ("ab", ("ab", None)),
            ("a-b-3", ("a-b", Some(3))),
            ("ab-99999999999999999999", ("ab-99999999999999999999", None)),
        ];
        for (id, want) in splits {
            assert_eq!(split_order_id(id), want, "{id}");
        }
        let mut ids = vec!["b-1", "a-10", "a-9", "a", "a-07", "a-0"];
        ids.sort_by(|a, b| cmp_order_ids(a, b));
        assert_eq!(ids, ["a", "a-0", "a-9", "a-10", "a-07", "b-1"]);
        assert!(is_server_prefix("0a1b2c3d4e5f"));
        assert!(!is_server_prefix("0A1B2C3D4E5F"));
        assert!(!is_server_prefix("0a1b2c3d4e5"));
        random_hex().map(|h| assert!(is_server_prefix(&h))).unwrap();
    }

    #[test]
    fn new_order_ids_are_server_shaped() {
        for good in ["0a1b2c3d4e5f-1", "0a1b2c3d4e5f-17", "ffffffffffff-9999999999999999999"] {
            assert!(check_new_order_id(good).is_ok(), "{good}");
        }
        for bad in [
            "0",
            "",
            "a-1",
            "0a1b2c3d4e5f",
            "0a1b2c3d4e5f-",
            "0a1b2c3d4e5f-0",
            "0a1b2c3d4e5f-01",
            "0A1B2C3D4E5F-1",
            "0a1b2c3d4e5g-1",
            "0a1b2c3d4e5f-1-2",
            "0a1b2c3d4e5f-+1",
            "0a1b2c3d4e5f-10000000000000000000",
            "00a1b2c3d4e5f-1",
        ] {
            assert!(check_new_order_id(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_order_id("0a1b2c3d4e5f-9999999999999999999").is_ok());
        let id = format!("{}-1", random_hex().unwrap());
        assert!(check_new_order_id(&id).is_ok());
    }

    #[test]
    fn order_times_near_the_clock() {
        let now = 1_795_874_106_123;
        assert!(check_order_time_near(&timestamp(now), now).is_ok());
        assert!(check_order_time_near(&timestamp(now - ORDER_TIME_SKEW_MS), now).is_ok());
        assert!(check_order_time_near(&timestamp(now + ORDER_TIME_SKEW_MS), now).is_ok());
        assert!(check_order_time_near(&timestamp(now - ORDER_TIME_SKEW_MS - 1), now).is_err());
        assert!(check_order_time_near(&timestamp(now + ORDER_TIME_SKEW_MS + 1), now).is_err());
        assert!(check_order_time_near("1970-01-01T00:00:00.000Z", now).is_err());
        assert!(check_order_time_near("2026-11-28T13:55:06Z", now).is_err());
        assert!(check_order_time_near(&timestamp_now(), now_ms()).is_ok());
    }
}
