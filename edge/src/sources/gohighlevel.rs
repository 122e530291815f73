//! GoHighLevel marketplace-app webhooks: the source's configuration (keys, the required
//! app, the optional locations), `X-GHL-Signature` (Ed25519) verification and the legacy
//! `X-WH-Signature` (RSA-SHA256, PKCS#1 v1.5) behind a switch. Normalization, the app
//! and location checks included, is in `gohighlevel/normalize.rs`, with the helpers
//! shared with workflow webhooks. Section numbers (§) refer to the GoHighLevel receiver
//! specification (`spec/gohighlevel.md`).
//!
//! One GHL key signs the webhooks of every marketplace app (§1.5), so a valid signature
//! proves only that GHL sent the event to *some* app: whoever receives webhooks for an
//! app of their own could replay them here. The source's `app_id` (or `app_ids`) is
//! therefore required, and the normalizer ignores an event whose `appId` is missing or
//! not configured, or whose location `location_ids` (when set) does not list.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hookline_proto::v1;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs1v15;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use sha2::Sha256;

use super::{Delivery, Kind, Setup, Source, VerifyError};

mod normalize;

pub(super) use normalize::{appointment_status, object_of};

/// GHL's published public key for `X-GHL-Signature` (§1.2). Not a secret. SHA-256 of the
/// DER SPKI: 5a2c1b2749d3efcc233fb27d4ab43d56b8d20818c42cd226f6c9a3ff20d3097c.
pub const GHL_ED25519_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
";

/// GHL's published 4096-bit RSA public key for the legacy `X-WH-Signature` (§1.2).
/// Community copies with typos exist; a unit test pins the SHA-256 of the DER SPKI:
/// 2f62045d413b1b7747e26770ce7f57840cbf86288cd20ceb90d299a62501fd25.
pub const GHL_RSA_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
";

const ED25519_HEADER: &str = "x-ghl-signature";
const ED25519_LABEL: &str = "X-GHL-Signature";
const RSA_HEADER: &str = "x-wh-signature";
const RSA_LABEL: &str = "X-WH-Signature";
/// Weaker RSA keys are refused at start-up; GHL's is 4096 bits.
const MIN_RSA_BITS: usize = 2048;
/// External id namespace of GHL contact ids (shared with workflow webhooks).
pub(super) const GHL_CONTACT: &str = "ghl_contact";

/// `[sources.<name>]` with `kind = "gohighlevel"`.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// PEM text, `env:NAME` or `file:PATH`. Default: GHL's published key.
    ed25519_public_key: Option<String>,
    /// PEM text (SPKI or PKCS#1), `env:NAME` or `file:PATH`. Default: GHL's published key.
    rsa_public_key: Option<String>,
    /// Accept `X-WH-Signature` when `X-GHL-Signature` is absent. Default false.
    #[serde(default)]
    allow_legacy_rsa: bool,
    /// The app whose events this source takes (the app id, or the OAuth client id
    /// `<appId>-<suffix>`). This or `app_ids` is required.
    app_id: Option<String>,
    /// Several apps, when one endpoint serves them all; exclusive with `app_id`.
    app_ids: Option<Vec<String>>,
    /// Only events of these locations (sub-accounts).
    location_ids: Option<Vec<String>>,
}

/// What a GoHighLevel source accepts besides the keys.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub allow_legacy_rsa: bool,
    /// The apps whose events are applied; an event without `appId`, or with another,
    /// is ignored. Empty (as by default) accepts no event at all: one key signs every
    /// app's webhooks, so no app check must never mean every app.
    pub app_ids: BTreeSet<String>,
    /// `Some`: events whose location is not listed are ignored.
    pub location_ids: Option<BTreeSet<String>>,
}

/// A GoHighLevel marketplace source.
pub struct GoHighLevel {
    /// Boxed: the keys' precomputed forms are a few hundred bytes.
    keys: Box<Keys>,
    rsa_bits: usize,
    options: Options,
}

struct Keys {
    ed25519: VerifyingKey,
    rsa: pkcs1v15::VerifyingKey<Sha256>,
}

impl fmt::Debug for GoHighLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys are not secrets; the raw Ed25519 key identifies which one is in use.
        f.debug_struct("GoHighLevel")
            .field(
                "ed25519_public_key",
                &hex::encode(self.keys.ed25519.as_bytes()),
            )
            .field("rsa_public_key_bits", &self.rsa_bits)
            .field("allow_legacy_rsa", &self.options.allow_legacy_rsa)
            .field("app_ids", &self.options.app_ids)
            .field("location_ids", &self.options.location_ids)
            .finish()
    }
}

/// Reads an Ed25519 public key from SPKI PEM.
pub fn parse_ed25519_pem(pem: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem.trim()).ok()
}

/// Reads an RSA public key from SPKI (`BEGIN PUBLIC KEY`) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`) PEM.
pub fn parse_rsa_pem(pem: &str) -> Option<rsa::PublicKey> {
    use rsa::pkcs8::DecodePublicKey as _;
    let pem = pem.trim();
    rsa::PublicKey::from_public_key_pem(pem)
        .or_else(|_| rsa::PublicKey::from_pkcs1_pem(pem).map_err(|_| ()))
        .ok()
}

impl Kind for GoHighLevel {
    const KIND: &'static str = "gohighlevel";
    type Config = RawConfig;

    fn from_config(raw: RawConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let ed25519_pem = match &raw.ed25519_public_key {
            Some(v) => setup.text("ed25519_public_key", v),
            None => Some(GHL_ED25519_PUBLIC_KEY_PEM.to_owned()),
        };
        let ed25519 = ed25519_pem.and_then(|pem| {
            let key = parse_ed25519_pem(&pem)
                .ok_or_else(|| "not an Ed25519 public key in PEM".to_owned());
            setup.check("ed25519_public_key", key)
        });
        let rsa_pem = match &raw.rsa_public_key {
            Some(v) => setup.text("rsa_public_key", v),
            None => Some(GHL_RSA_PUBLIC_KEY_PEM.to_owned()),
        };
        let rsa = rsa_pem.and_then(|pem| {
            let key = parse_rsa_pem(&pem)
                .ok_or_else(|| "not an RSA public key in PEM".to_owned())
                .and_then(|rsa| {
                    if rsa.size() * 8 < MIN_RSA_BITS {
                        Err(format!(
                            "RSA key has {} bits, at least {MIN_RSA_BITS} are required",
                            rsa.size() * 8
                        ))
                    } else {
                        Ok(rsa)
                    }
                });
            setup.check("rsa_public_key", key)
        });
        let app_ids = app_ids(setup, raw.app_id, raw.app_ids);
        let location_ids = match raw.location_ids {
            None => Some(None),
            Some(ids) if ids.is_empty() => {
                setup.problem(
                    "location_ids",
                    "is empty (leave it out to accept every location)",
                );
                None
            }
            Some(ids) => {
                let mut set = BTreeSet::new();
                for (i, id) in ids.iter().enumerate() {
                    let id = id.trim();
                    if id.is_empty() {
                        setup.problem(&format!("location_ids[{i}]"), "is empty");
                    }
                    set.insert(id.to_owned());
                }
                Some(Some(set))
            }
        };
        let (ed25519, rsa, app_ids, location_ids) = (ed25519?, rsa?, app_ids?, location_ids?);
        setup.ok().then(|| {
            Self::new(
                ed25519,
                rsa,
                Options {
                    allow_legacy_rsa: raw.allow_legacy_rsa,
                    app_ids,
                    location_ids,
                },
            )
        })
    }
}

impl GoHighLevel {
    /// A source verifying with these keys.
    pub fn new(ed25519: VerifyingKey, rsa: rsa::PublicKey, options: Options) -> Self {
        let rsa_bits = rsa.size() * 8;
        Self {
            keys: Box::new(Keys {
                ed25519,
                rsa: pkcs1v15::VerifyingKey::new(rsa),
            }),
            rsa_bits,
            options,
        }
    }
}

impl Source for GoHighLevel {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    /// Verifies a delivery over its raw body (§0, §1). `X-GHL-Signature`, when it carries
    /// a signature, alone decides; `X-WH-Signature` is consulted only when it does not and
    /// the legacy switch is on. An empty value or `N/A` means "no signature". A value that
    /// is not base64 of the right length is a failure, never a pass.
    fn verify(&self, d: Delivery<'_>, _now: i64) -> Result<(), VerifyError> {
        // GHL signatures bind no time: retries resend the original body (§1.5).
        // Both headers are read first so that a duplicated one is refused whichever decides.
        let ed25519 = signature_header(d.headers, ED25519_HEADER, ED25519_LABEL)?;
        let rsa = signature_header(d.headers, RSA_HEADER, RSA_LABEL)?;
        if let Some(value) = ed25519 {
            let raw = decode(value, "X-GHL-Signature is not base64")?;
            let signature = ed25519_dalek::Signature::from_slice(&raw)
                .map_err(|_| VerifyError::Malformed("X-GHL-Signature is not 64 bytes"))?;
            return self
                .keys
                .ed25519
                .verify_strict(d.body, &signature)
                .map_err(|_| VerifyError::Mismatch);
        }
        match rsa {
            Some(value) if self.options.allow_legacy_rsa => {
                let raw = decode(value, "X-WH-Signature is not base64")?;
                if raw.len() * 8 != self.rsa_bits {
                    return Err(VerifyError::Malformed(
                        "X-WH-Signature does not have the key's length",
                    ));
                }
                let signature = pkcs1v15::Signature::try_from(raw.as_slice())
                    .map_err(|_| VerifyError::Malformed("X-WH-Signature is not a signature"))?;
                self.keys
                    .rsa
                    .verify(d.body, &signature)
                    .map_err(|_| VerifyError::Mismatch)
            }
            // Without the switch, a legacy signature alone is as good as none.
            _ => Err(VerifyError::MissingHeader(ED25519_LABEL)),
        }
    }

    fn normalize(&self, source: &str, d: Delivery<'_>, received_at_ms: i64) -> v1::WebhookEvent {
        self.normalize_body(source, d.body, received_at_ms)
    }

    /// GHL retries 429 under its old policy (429 only) and its new one (any non-2xx).
    fn retry_status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
}

/// The app ids of `app_id` or `app_ids`, exactly one of which is required (§1.5).
fn app_ids(
    setup: &mut Setup<'_>,
    app_id: Option<String>,
    app_ids: Option<Vec<String>>,
) -> Option<BTreeSet<String>> {
    let listed: Vec<(String, String)> = match (app_id, app_ids) {
        (None, None) => {
            setup.problem(
                "app_id",
                "is required: GoHighLevel signs every app's webhooks with one key, so \
                 without it another app's events would be applied (set app_id, or app_ids \
                 for several)",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            setup.problem(
                "app_ids",
                "cannot be set together with app_id (app_id for one app, app_ids for several)",
            );
            return None;
        }
        (Some(id), None) => vec![("app_id".to_owned(), id)],
        (None, Some(ids)) if ids.is_empty() => {
            setup.problem(
                "app_ids",
                "is empty (list the id of every app whose events this source takes)",
            );
            return None;
        }
        (None, Some(ids)) => ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (format!("app_ids[{i}]"), id))
            .collect(),
    };
    let mut set = BTreeSet::new();
    let mut ok = true;
    for (key, id) in listed {
        let id = id.trim();
        if id.is_empty() {
            setup.problem(&key, "is empty");
            ok = false;
            continue;
        }
        // GHL's SDK compares `appId` with the client id up to its first '-'.
        let app = id.split('-').next().unwrap_or(id);
        if app.is_empty() {
            setup.problem(
                &key,
                "has nothing before its first '-' (the app id, or the client id <appId>-<suffix>)",
            );
            ok = false;
            continue;
        }
        set.insert(app.to_owned());
    }
    ok.then_some(set)
}

/// The one value of a signature header, or `None` when it says "no signature".
fn signature_header<'a>(
    headers: &'a http::HeaderMap,
    name: &'static str,
    label: &'static str,
) -> Result<Option<&'a [u8]>, VerifyError> {
    let value = super::one_header(headers, name, label)?;
    // GHL's own sample code reads `N/A` as "no signature" (§1.4).
    Ok(value.filter(|v| !v.eq_ignore_ascii_case(b"N/A")))
}

/// The signature bytes of a base64 header value; `malformed` says which header it was.
fn decode(value: &[u8], malformed: &'static str) -> Result<Vec<u8>, VerifyError> {
    STANDARD
        .decode(value)
        .map_err(|_| VerifyError::Malformed(malformed))
}

/// The `X-GHL-Signature` value GHL would send for `body`, made with an Ed25519 private
/// key in PKCS#8 PEM. For tests, the sample webhook and the benchmark (with TEST-ONLY
/// keys: GHL's private key is GHL's).
pub fn sign(private_key_pem: &str, body: &[u8]) -> Option<String> {
    let key = SigningKey::from_pkcs8_pem(private_key_pem.trim()).ok()?;
    Some(STANDARD.encode(key.sign(body).to_bytes()))
}

#[cfg(test)]
pub(crate) mod tests;
