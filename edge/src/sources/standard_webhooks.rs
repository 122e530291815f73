//! Standard Webhooks (standardwebhooks.com, v1.0.0), the scheme of Svix, Clerk, Resend,
//! Supabase and others: `webhook-id`, `webhook-timestamp` and `webhook-signature` (or
//! the same headers named `svix-*`), signed content `{id}.{timestamp}.{raw body}`, a
//! space-separated list of `v1,<base64>` (HMAC-SHA256, keyed with the base64-decoded
//! part of a `whsec_…` secret) and `v1a,<base64>` (Ed25519, checked with configured
//! `whpk_…` public keys) signatures, any of which may match any key. The timestamp must
//! be within the tolerance (300 s) in both directions. The event id is `webhook-id`,
//! stable across retries; the payload becomes an event through the source's mapping
//! (`mapping.rs`), by default reading `type` and `timestamp` as the spec recommends.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::VerifyingKey;
use hookline_proto::v1;
use serde::Deserialize;

use super::mapping::{Defaults, Given, Mapping};
use super::signature::{self, Algorithm, Keys};
use super::{Delivery, Kind, Setup, Source, VerifyError, body_digest_id, header_id, one_header};
use crate::secret::SecretRefs;

/// Signatures one delivery may carry. A rotating sender sends two or three; each `v1a`
/// entry costs an Ed25519 check over the whole body per key, so without a bound a
/// forger could make one request cost seconds of CPU.
const MAX_SIGNATURES: usize = 16;

/// Standard base64 that takes padding or not, as the reference libraries do.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `[sources.<name>]` with `kind = "standard-webhooks"`.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// `whsec_<base64>` secrets (inline, `env:NAME`, `file:PATH`), several while rotating.
    secrets: Option<SecretRefs>,
    /// `whpk_<base64>` Ed25519 public keys for `v1a` signatures.
    public_keys: Option<Vec<String>>,
    tolerance_secs: Option<u64>,
    map: Option<toml::Table>,
    actions: Option<Vec<toml::Table>>,
}

/// A Standard Webhooks source.
pub struct StandardWebhooks {
    /// HMAC keys for `v1`; `None` when the source takes only `v1a`.
    keys: Option<Keys>,
    public_keys: Vec<VerifyingKey>,
    tolerance_secs: i64,
    mapping: Mapping,
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandardWebhooks")
            .field("secrets", &self.keys)
            .field(
                "public_keys",
                &self
                    .public_keys
                    .iter()
                    .map(|k| hex::encode(k.as_bytes()))
                    .collect::<Vec<_>>(),
            )
            .field("tolerance_secs", &self.tolerance_secs)
            .field("mapping", &self.mapping)
            .finish()
    }
}

/// The key bytes of a `whsec_` secret (or of a bare base64 one).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = BASE64.decode(encoded).map_err(|_| {
        "is not a Standard Webhooks secret: whsec_ followed by the base64 of the key bytes"
            .to_owned()
    })?;
    if key.is_empty() {
        return Err("holds an empty key".to_owned());
    }
    Ok(key)
}

/// An Ed25519 public key from `whpk_<base64 of its 32 bytes>`.
pub fn decode_public_key(key: &str) -> Result<VerifyingKey, String> {
    let encoded = key.trim();
    let encoded = encoded.strip_prefix("whpk_").unwrap_or(encoded);
    let bytes: [u8; 32] = BASE64
        .decode(encoded)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            "is not whpk_ followed by the base64 of a 32-byte Ed25519 public key".to_owned()
        })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "is not an Ed25519 public key".to_owned())
}

impl Kind for StandardWebhooks {
    const KIND: &'static str = "standard-webhooks";
    type Config = RawConfig;

    fn from_config(raw: RawConfig, setup: &mut Setup<'_>) -> Option<Self> {
        if raw.secrets.is_none() && raw.public_keys.is_none() {
            setup.problem(
                "secrets",
                "is required: whsec_ secrets for v1 signatures (or public_keys, whpk_, for v1a)",
            );
        }
        let keys = match &raw.secrets {
            None => Some(None),
            Some(refs) => setup
                .secrets("secrets", refs, |s| decode_secret(s.expose()))
                .map(|keys| Some(Keys::new(Algorithm::Sha256, keys.iter().map(Vec::as_slice)))),
        };
        let mut public_keys = Vec::new();
        for (i, value) in raw.public_keys.iter().flatten().enumerate() {
            let key = format!("public_keys[{i}]");
            if let Some(text) = setup.text(&key, value) {
                let decoded = decode_public_key(&text);
                public_keys.extend(setup.check(&key, decoded));
            }
        }
        if raw.public_keys.as_ref().is_some_and(Vec::is_empty) {
            setup.problem(
                "public_keys",
                "is empty (leave it out for v1 signatures only)",
            );
        }
        let tolerance = setup.check("tolerance_secs", signature::tolerance(raw.tolerance_secs));
        let defaults = Defaults {
            event_type: Some("/type"),
            occurred_at: Some("/timestamp"),
        };
        let mapping = Mapping::from_config(raw.map, raw.actions, defaults, setup);
        let (keys, tolerance_secs, mapping) = (keys?, tolerance?, mapping?);
        setup.ok().then(|| Self {
            keys,
            public_keys,
            tolerance_secs,
            mapping,
        })
    }
}

/// The three headers, by the name family the delivery uses.
struct Headers<'a> {
    id: &'a [u8],
    timestamp: &'a [u8],
    signature: &'a [u8],
}

const STANDARD: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];
const SVIX: [&str; 3] = ["svix-id", "svix-timestamp", "svix-signature"];

/// The names the delivery uses: `webhook-*`, or `svix-*` when no `webhook-*` header is
/// present and a `svix-signature` is.
fn names(h: &http::HeaderMap) -> [&'static str; 3] {
    if STANDARD.iter().any(|n| h.contains_key(*n)) || !h.contains_key(SVIX[2]) {
        STANDARD
    } else {
        SVIX
    }
}

/// Reads the three headers, by the names the delivery uses.
fn headers(h: &http::HeaderMap) -> Result<Headers<'_>, VerifyError> {
    let [id, ts, sig] = names(h);
    let read =
        |name: &'static str| one_header(h, name, name)?.ok_or(VerifyError::MissingHeader(name));
    Ok(Headers {
        id: read(id)?,
        timestamp: read(ts)?,
        signature: read(sig)?,
    })
}

impl Source for StandardWebhooks {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn recorded_headers(&self, headers: &http::HeaderMap) -> Vec<v1::Header> {
        super::headers_named(headers, [STANDARD[0], SVIX[0]])
    }

    /// Verifies as §4 of the specification says: the headers, the timestamp within the
    /// tolerance both ways, then any `v1` (or `v1a`) signature over
    /// `{id}.{timestamp}.{body}` under any configured key.
    fn verify(&self, d: Delivery<'_>, now: i64) -> Result<(), VerifyError> {
        let h = headers(d.headers)?;
        if h.id.contains(&b'.') {
            return Err(VerifyError::Malformed("webhook-id contains '.'"));
        }
        let ts = signature::parse_timestamp(h.timestamp)?;
        signature::check_fresh(ts, now, self.tolerance_secs)?;
        let entries: Vec<&[u8]> = h
            .signature
            .split(|b| *b == b' ')
            .filter(|e| !e.is_empty())
            .collect();
        if entries.len() > MAX_SIGNATURES {
            return Err(VerifyError::Malformed(
                "webhook-signature holds more than 16 signatures",
            ));
        }
        let mut v1 = Vec::new();
        let mut v1a: Vec<Vec<u8>> = Vec::new();
        for entry in entries {
            // An entry without a comma is no signature (the python library would fail
            // on it with a bare ValueError).
            let Some(comma) = entry.iter().position(|b| *b == b',') else {
                continue;
            };
            let (version, encoded) = (&entry[..comma], &entry[comma + 1..]);
            // A bad base64 value matches nothing, and does not hide the others.
            let Ok(decoded) = BASE64.decode(encoded) else {
                continue;
            };
            match version {
                b"v1" if self.keys.is_some() => v1.push(decoded),
                b"v1a" if !self.public_keys.is_empty() && !v1a.contains(&decoded) => {
                    v1a.push(decoded);
                }
                // Other versions, and one this source has no key for: skipped, so a
                // correct MAC labelled v1a or v2 does not count as v1.
                _ => {}
            }
        }
        if v1.is_empty() && v1a.is_empty() {
            return Err(VerifyError::Malformed(
                "webhook-signature has no v1 or v1a signature this source can check",
            ));
        }
        let signed: [&[u8]; 5] = [h.id, b".", h.timestamp, b".", d.body];
        if self
            .keys
            .as_ref()
            .is_some_and(|keys| keys.any_matches(&signed, &v1))
        {
            return Ok(());
        }
        if !v1a.is_empty() {
            let message = signed.concat();
            let matched = v1a.iter().any(|sig| {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|sig| {
                    self.public_keys
                        .iter()
                        .any(|key| key.verify_strict(&message, &sig).is_ok())
                })
            });
            if matched {
                return Ok(());
            }
        }
        Err(VerifyError::Mismatch)
    }

    fn normalize(&self, source: &str, d: Delivery<'_>, received_at_ms: i64) -> v1::WebhookEvent {
        // Verified, so the id header is there; the digest is only a guard. The id is
        // `webhook-id`, else `svix-id`: for a verified delivery that is the family
        // `names` chose, and it is what a replay finds too, whose recorded headers hold
        // the id headers alone (without `svix-signature`, `names` would pick
        // `webhook-*` there, and an event of a `svix-*` sender would get its body's
        // digest as id instead of its own).
        let id_name = [STANDARD[0], SVIX[0]]
            .into_iter()
            .find(|name| d.headers.contains_key(*name))
            .unwrap_or(STANDARD[0]);
        let id = one_header(d.headers, id_name, id_name)
            .ok()
            .flatten()
            .map_or_else(|| body_digest_id(d.body), header_id);
        let given = Given {
            source,
            kind: Self::KIND,
            id: &id,
            event_type: None,
            // webhook-timestamp is the attempt's time, which changes on every retry: it
            // cannot order events.
            occurred_at_ms: None,
            received_at_ms,
        };
        self.mapping.event(given, d.body)
    }
}

/// The `webhook-signature` entry a sender makes with a `whsec_` secret: for tests and
/// samples.
pub fn sign_v1(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = decode_secret(secret).ok()?;
    let ts = timestamp.to_string();
    let mac = signature::mac(
        Algorithm::Sha256,
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    Some(format!("v1,{}", BASE64.encode(mac)))
}

/// The `v1a` entry of an Ed25519 signing key's 32 secret bytes: for tests and samples.
pub fn sign_v1a(signing_key: &[u8; 32], id: &str, timestamp: i64, body: &[u8]) -> String {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(signing_key);
    let message = [
        id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        body,
    ]
    .concat();
    format!("v1a,{}", BASE64.encode(key.sign(&message).to_bytes()))
}

/// The `whpk_` form of the public key of an Ed25519 signing key: for tests and samples.
pub fn public_key_of(signing_key: &[u8; 32]) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(signing_key);
    format!("whpk_{}", BASE64.encode(key.verifying_key().as_bytes()))
}

#[cfg(test)]
mod tests;
