//! Reading values out of JSON payloads, shared by the normalizers: instants, amounts,
//! tag lists, regions and JSON Pointers. Pure; each helper says what it accepts and
//! gives `None` for anything else, so a provider's odd value never fails an event.

use hookline_proto::prost_types::Timestamp;
use hookline_proto::v1;
use serde_json::Value;

/// The region for reading a phone number, when `country` is an ISO 3166 two-letter code.
pub fn phone_region(country: Option<&str>) -> String {
    match country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            c.to_ascii_uppercase()
        }
        _ => String::new(),
    }
}

/// The full tag list from a JSON array of strings, or from a comma-separated string as
/// workflow webhooks send it. `null` says nothing; an empty list or `""` clears the tags.
pub fn tag_list(v: &Value) -> Option<v1::TagList> {
    let mut tags: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && !tags.iter().any(|have| have == t) {
            tags.push(t.to_owned());
        }
    };
    match v {
        Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut push),
        Value::String(csv) => csv.split(',').for_each(&mut push),
        _ => return None,
    }
    Some(v1::TagList { tags })
}

/// An RFC 3339 instant with any offset, `Z` included. A time without an offset is not an
/// instant and gives `None`.
pub fn parse_instant(s: &str) -> Option<jiff::Timestamp> {
    s.trim().parse().ok()
}

pub fn proto_timestamp(t: jiff::Timestamp) -> Timestamp {
    let ns = t.as_nanosecond();
    Timestamp {
        seconds: i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or_default(),
        nanos: i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or_default(),
    }
}

/// Digits after the decimal point of an ISO 4217 currency (lower-case code).
pub fn currency_exponent(currency: &str) -> u32 {
    match currency {
        "bif" | "clp" | "djf" | "gnf" | "isk" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf"
        | "ugx" | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "iqd" | "jod" | "kwd" | "lyd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// An amount stated in major units (`1500`, `1499.99`, or the same as a string) in
/// minor units: × 10^`exponent`. Integers are exact; decimals are rounded to the nearest
/// minor unit (half away from zero), which is exact for any amount written with at most
/// `exponent` decimals below 2^53 minor units. `None` when it is not a finite number or
/// does not fit in an i64.
pub fn to_minor_units(v: &Value, exponent: u32) -> Option<i64> {
    let factor = 10_i64.pow(exponent);
    let number = match v {
        Value::Number(n) => n.clone(),
        Value::String(s) => s.trim().parse::<serde_json::Number>().ok()?,
        _ => return None,
    };
    if let Some(i) = number.as_i64() {
        return i.checked_mul(factor);
    }
    let scaled = (number.as_f64()? * factor as f64).round();
    // i64::MAX is not representable as f64; 2^63 is the first value out of range.
    (scaled.is_finite() && scaled >= -(2f64.powi(63)) && scaled < 2f64.powi(63))
        .then_some(scaled as i64)
}

/// Whether `p` is a JSON Pointer (RFC 6901): empty, or `/`-separated tokens in which
/// `~` only starts `~0` or `~1`. serde_json would read `~2` as is rather than refuse it.
pub fn is_json_pointer(p: &str) -> bool {
    let Some(tokens) = p.strip_prefix('/') else {
        return p.is_empty();
    };
    tokens.split('/').all(|token| {
        let mut rest = token;
        while let Some(at) = rest.find('~') {
            if !matches!(rest.as_bytes().get(at + 1), Some(b'0' | b'1')) {
                return false;
            }
            rest = &rest[at + 2..];
        }
        true
    })
}

/// A value as text: a non-blank string (trimmed), or a number written out (ids and
/// phone numbers typed as numbers). Anything else is no text.
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => super::non_blank(Some(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The id at `pointer`: a non-blank string (trimmed) or an integer. Anything else (a
/// missing field, a blank string, a float, an object) is no id.
pub fn id_at(top: &Value, pointer: &str) -> Option<String> {
    match top.pointer(pointer)? {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => None,
        v => text_of(v),
    }
}

/// Below this an epoch number is seconds, from it milliseconds: 10^11 seconds is the
/// year 5138, 10^11 milliseconds is 1973, so no time a sender states is ambiguous.
const EPOCH_MILLIS_FROM: i64 = 100_000_000_000;

/// An instant from an RFC 3339 string (any offset) or a Unix epoch number in seconds or
/// milliseconds (also written as a string of digits), in milliseconds.
pub fn instant_millis(v: &Value) -> Option<i64> {
    let epoch = |n: i64| {
        if n.unsigned_abs() < EPOCH_MILLIS_FROM.unsigned_abs() {
            n.checked_mul(1000)
        } else {
            Some(n)
        }
    };
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .and_then(epoch),
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return s.parse().ok().and_then(epoch);
            }
            parse_instant(s).map(|t| t.as_millisecond())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        use serde_json::json;
        let cases = [
            (json!("2026-12-04T10:00:00Z"), Some(1_796_378_400_000)),
            (json!("2026-12-04T11:00:00+01:00"), Some(1_796_378_400_000)),
            (json!(1_796_378_400), Some(1_796_378_400_000)),
            (json!(1_796_378_400_123_i64), Some(1_796_378_400_123)),
            (json!("1796378400"), Some(1_796_378_400_000)),
            (json!(1_796_378_400.0), Some(1_796_378_400_000)),
            (json!(1_796_378_400.5), None),
            (json!("2026-12-04T10:00:00"), None),
            (json!("yesterday"), None),
            (json!(""), None),
            (json!(null), None),
            (json!(true), None),
            // Out of any range, but read without overflow: contacts-svc falls back to the
            // receipt time for it.
            (json!(i64::MIN), Some(i64::MIN)),
            (json!(i64::MAX), Some(i64::MAX)),
            (json!(-1_796_378_400), Some(-1_796_378_400_000)),
        ];
        for (v, want) in cases {
            assert_eq!(instant_millis(&v), want, "{v}");
        }
    }

    #[test]
    fn pointers() {
        for (p, ok) in [
            ("", true),
            ("/a", true),
            ("/a/0/b", true),
            ("/a~1b/~0c", true),
            ("a", false),
            ("/a~2", false),
            ("/a~", false),
        ] {
            assert_eq!(is_json_pointer(p), ok, "{p:?}");
        }
    }

    #[test]
    fn texts() {
        use serde_json::json;
        assert_eq!(text_of(&json!(" a ")), Some("a".to_owned()));
        assert_eq!(text_of(&json!("  ")), None);
        assert_eq!(
            text_of(&json!(4155550100_i64)),
            Some("4155550100".to_owned())
        );
        assert_eq!(text_of(&json!(["a"])), None);
        assert_eq!(text_of(&json!(null)), None);
    }
}
