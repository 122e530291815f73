//! The core every HMAC scheme shares (Stripe, Standard Webhooks, the generic `hmac`
//! kind): a delivery is authentic when **any** signature it carries is the MAC of the
//! signed content under **any** of the source's keys (several while a secret is being
//! rotated), compared in constant time. Parsing headers and choosing the signed content
//! stay with each provider; this module knows only bytes.

use std::fmt;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq as _;

use super::VerifyError;

/// How far a signed timestamp may be from the receipt time by default: 300 s, as
/// Stripe, Standard Webhooks and Slack ask.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// A day: a wider window would make a captured request replayable for longer than any
/// sender's clock can be off.
const MAX_TOLERANCE_SECS: u64 = 86_400;

/// The tolerance a source's `tolerance_secs` sets, or why it cannot be.
pub fn tolerance(configured: Option<u64>) -> Result<i64, String> {
    let secs = configured.unwrap_or(DEFAULT_TOLERANCE_SECS);
    if (1..=MAX_TOLERANCE_SECS).contains(&secs) {
        Ok(i64::try_from(secs).unwrap_or(i64::MAX))
    } else {
        Err(format!("must be between 1 and {MAX_TOLERANCE_SECS}"))
    }
}

/// A signed timestamp as sent: whole Unix seconds in ASCII digits (no sign, no
/// fraction, no milliseconds suffix).
pub fn parse_timestamp(value: &[u8]) -> Result<i64, VerifyError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or(VerifyError::Malformed(
            "timestamp is not a whole number of seconds",
        ))
}

/// Whether a signed timestamp is within `tolerance` of `now`, in both directions: a
/// timestamp far in the future would stay replayable until it comes.
pub fn check_fresh(ts: i64, now: i64, tolerance: i64) -> Result<(), VerifyError> {
    if now.saturating_sub(ts) > tolerance || ts.saturating_sub(now) > tolerance {
        Err(VerifyError::StaleTimestamp)
    } else {
        Ok(())
    }
}

/// The hash under the HMAC. SHA-1 is not offered: no sender hookline presets needs it
/// (GitHub sends SHA-256 beside its legacy SHA-1 header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// A source's keys, each ready to MAC (keyed once, cloned per delivery).
#[derive(Clone)]
pub struct Keys {
    algorithm: Algorithm,
    keys: Vec<Keyed>,
}

#[derive(Clone)]
enum Keyed {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} {:?} keys redacted]",
            self.keys.len(),
            self.algorithm
        )
    }
}

impl Keys {
    /// Keys for `algorithm`; HMAC takes keys of any length.
    pub fn new<'a>(algorithm: Algorithm, keys: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let keys = keys
            .into_iter()
            .map(|k| match algorithm {
                Algorithm::Sha256 => Keyed::Sha256(
                    Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes keys of any length"),
                ),
                Algorithm::Sha512 => Keyed::Sha512(
                    Hmac::<Sha512>::new_from_slice(k).expect("HMAC takes keys of any length"),
                ),
            })
            .collect();
        Self { algorithm, keys }
    }

    /// Whether any of `candidates` is the MAC of `signed` (its parts in order, as one
    /// message) under any key. Each comparison takes the same time wherever the bytes
    /// differ; a candidate of the wrong length matches nothing.
    pub fn any_matches<C: AsRef<[u8]>>(&self, signed: &[&[u8]], candidates: &[C]) -> bool {
        if candidates.is_empty() {
            return false;
        }
        self.keys.iter().any(|key| {
            key.with_mac(signed, |expected| {
                candidates
                    .iter()
                    .any(|c| bool::from(c.as_ref().ct_eq(expected)))
            })
        })
    }
}

impl Keyed {
    /// Runs `f` on the MAC of `signed`, which stays on the stack (this is on every
    /// delivery's path).
    fn with_mac<T>(&self, signed: &[&[u8]], f: impl FnOnce(&[u8]) -> T) -> T {
        match self {
            Self::Sha256(k) => {
                let mut mac = k.clone();
                signed.iter().for_each(|part| mac.update(part));
                f(&mac.finalize().into_bytes())
            }
            Self::Sha512(k) => {
                let mut mac = k.clone();
                signed.iter().for_each(|part| mac.update(part));
                f(&mac.finalize().into_bytes())
            }
        }
    }
}

/// The MAC of `signed` under `key`: how a sender signs. For tests, the samples and the
/// benchmark.
pub fn mac(algorithm: Algorithm, key: &[u8], signed: &[&[u8]]) -> Vec<u8> {
    Keys::new(algorithm, [key]).keys[0].with_mac(signed, <[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("what do ya want for nothing?" under "Jefe").
    #[test]
    fn known_answers() {
        let msg: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        assert_eq!(
            hex::encode(mac(Algorithm::Sha256, b"Jefe", msg)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(mac(Algorithm::Sha512, b"Jefe", msg)),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn any_signature_under_any_key() {
        let keys = Keys::new(Algorithm::Sha256, [&b"old"[..], &b"new"[..]]);
        let signed: &[&[u8]] = &[b"1.", b"body"];
        let by_old = mac(Algorithm::Sha256, b"old", signed);
        let by_new = mac(Algorithm::Sha256, b"new", signed);
        let by_other = mac(Algorithm::Sha256, b"other", signed);
        let cases: [(&str, Vec<Vec<u8>>, bool); 7] = [
            ("old key", vec![by_old.clone()], true),
            ("new key", vec![by_new.clone()], true),
            ("junk then valid", vec![vec![0; 32], by_new.clone()], true),
            ("other key", vec![by_other.clone()], false),
            ("none", vec![], false),
            ("truncated", vec![by_old[..31].to_vec()], false),
            ("longer", vec![[by_old.as_slice(), &[0]].concat()], false),
        ];
        for (name, candidates, want) in cases {
            assert_eq!(keys.any_matches(signed, &candidates), want, "{name}");
        }
        // The parts are one message: where it is split does not matter, its bytes do.
        assert!(keys.any_matches(&[b"1.body"], std::slice::from_ref(&by_old)));
        assert!(!keys.any_matches(&[b"1.bodx"], &[by_old]));
        assert_eq!(format!("{keys:?}"), "[2 Sha256 keys redacted]");
    }
}
