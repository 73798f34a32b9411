//! Money as a whole number of cents.
//!
//! Prices are exact: stored as `i64` cents, written to CSV as `12.50`, and shown in JSON
//! as a number with at most two decimals (`12.5`). A JSON price with more than two
//! decimals, negative, or not finite is rejected, never rounded silently.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The largest price accepted: ten million, far beyond any book, far below f64's exact range.
const MAX_CENTS: i64 = 1_000_000_000;

/// An amount of money in cents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

impl Money {
    /// Money from a number of cents.
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents)
    }

    /// The amount in cents.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// Money from a JSON number: finite, non-negative, at most two decimals.
    pub fn from_f64(value: f64) -> Result<Money, String> {
        let scaled = value * 100.0;
        let cents = scaled.round();
        if !value.is_finite() || value < 0.0 || cents > MAX_CENTS as f64 {
            return Err(format!("price {value} must be between 0 and {}", MAX_CENTS / 100));
        }
        if (scaled - cents).abs() > 1e-6 {
            return Err(format!("price {value} has more than two decimals"));
        }
        Ok(Money(cents as i64))
    }
}

impl fmt::Display for Money {
    /// `12.50`: the CSV form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl FromStr for Money {
    type Err = String;

    /// Parses `12`, `12.5` or `12.50` exactly, without going through a float.
    fn from_str(s: &str) -> Result<Money, String> {
        let bad = || format!("bad price {s:?}");
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!frac.is_empty() && !digits(frac)) || frac.len() > 2 || whole.len() > 9 {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let cents = whole * 100 + frac;
        if cents > MAX_CENTS {
            return Err(bad());
        }
        Ok(Money(cents))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The shortest f64 text that reads back as cents/100 has at most two decimals.
        s.serialize_f64(self.0 as f64 / 100.0)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        Money::from_f64(f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        let cases = [("12", 1200, "12.00"), ("12.5", 1250, "12.50"), ("0.07", 7, "0.07"), ("19.99", 1999, "19.99")];
        for (text, cents, shown) in cases {
            let m: Money = text.parse().unwrap();
            assert_eq!(m.cents(), cents, "{text}");
            assert_eq!(m.to_string(), shown);
        }
        for bad in ["", ".5", "1.234", "-1", "1e3", "abc", "1.x", "12345678901"] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn json_has_at_most_two_decimals() {
        for cents in [0, 1, 7, 10, 99, 1999, 2999, 123_456, 100_000_001] {
            let json = serde_json::to_string(&Money(cents)).unwrap();
            let decimals = json.split_once('.').map_or(0, |(_, f)| f.len());
            assert!(decimals <= 2, "{cents} -> {json}");
            assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), Money(cents));
        }
        assert_eq!(Money::from_f64(0.1 + 0.2).unwrap(), Money(30));
        for bad in [-1.0, 12.345, f64::NAN, f64::INFINITY, 1e300] {
            assert!(Money::from_f64(bad).is_err(), "{bad}");
        }
    }
}
