//! Generic HMAC senders (`kind = "hmac"`): a MAC of the raw body, alone or with a
//! timestamp and id, in one header. Everything is configuration: the header, the hash
//! (SHA-256 or SHA-512), the encoding (hex or base64), a prefix (`sha256=`), the
//! signed-content template (`{body}`, `{timestamp}.{body}`, `v0:{timestamp}:{body}`,
//! `{id}.{timestamp}.{body}`) with the timestamp's header and tolerance, where the event
//! id comes from and the event type (a header). The key is the secret's UTF-8 bytes, as
//! these senders use it.
//!
//! # Event ids
//!
//! Only what the signature covers may deduplicate: an id an attacker can change would let
//! a captured delivery be replayed as new. So the id is an `id_header` only when the
//! template signs it (`{id}`); else the payload's id at `id_pointer` (the body is
//! signed); else the SHA-256 of the type header and the body. A digest id is a duplicate
//! for `dedup_window_secs`: by default an hour when the template signs a timestamp (a
//! replay is refused after the tolerance anyway, and the same body may mean something
//! again later), and contacts-svc's whole dedup TTL when it does not (nothing else stops
//! a replay). Senders whose delivery-id header is not signed (GitHub's
//! `X-GitHub-Delivery`, Shopify's `X-Shopify-Webhook-Id`) are therefore deduplicated on
//! their type and body: a redelivery is the same bytes, and two topics of one order
//! (`orders/create`, `orders/paid`) stay two events.
//!
//! `preset` fills these in as a sender publishes its scheme (`spec/standard-webhooks.md`
//! §7); keys set beside it win:
//!
//! | preset | header | value | signed | id | type | time |
//! |---|---|---|---|---|---|---|
//! | `github` | `X-Hub-Signature-256` | `sha256=` + hex | body | digest | `X-GitHub-Event` | |
//! | `shopify` | `X-Shopify-Hmac-Sha256` | base64 | body | digest | `X-Shopify-Topic` | `/updated_at` |
//! | `slack` | `X-Slack-Signature` | `v0=` + hex | `v0:{X-Slack-Request-Timestamp}:{body}`, ±300 s | `/event_id` | `/event/type` | `/event_time` |
//!
//! A Slack source also answers Slack's signed `url_verification` request with its
//! challenge, as the Events API requires before it sends events. The payload becomes an
//! event through the source's mapping (`mapping.rs`).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hookline_proto::v1;
use http::HeaderName;
use serde::Deserialize;
use serde_json::{Value, json};

use super::fields::id_at;
use super::mapping::{Defaults, Given, Mapping};
use super::signature::{self, Algorithm, Keys};
use super::{Delivery, Kind, Setup, Source, VerifyError, digest_id, header_id, one_header};
use crate::secret::SecretRefs;

/// `dedup_window_secs` of digest ids when the template signs a timestamp.
const TIMESTAMPED_DEDUP_WINDOW_SECS: u32 = 3600;

/// `[sources.<name>]` with `kind = "hmac"`.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    preset: Option<String>,
    /// Shared secrets (inline, `env:NAME`, `file:PATH`), several while rotating.
    secrets: SecretRefs,
    header: Option<String>,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    signed_content: Option<String>,
    timestamp_header: Option<String>,
    tolerance_secs: Option<u64>,
    id_header: Option<String>,
    id_pointer: Option<String>,
    type_header: Option<String>,
    /// Signed, so that a negative value gets this key's message rather than serde's.
    dedup_window_secs: Option<i64>,
    map: Option<toml::Table>,
    actions: Option<Vec<toml::Table>>,
}

/// A sender's published scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Preset {
    name: &'static str,
    header: Option<&'static str>,
    algorithm: Option<&'static str>,
    encoding: Option<&'static str>,
    prefix: Option<&'static str>,
    signed_content: Option<&'static str>,
    timestamp_header: Option<&'static str>,
    id_header: Option<&'static str>,
    id_pointer: Option<&'static str>,
    type_header: Option<&'static str>,
    defaults: Defaults,
    slack_url_verification: bool,
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "github",
        header: Some("x-hub-signature-256"),
        algorithm: Some("sha256"),
        encoding: Some("hex"),
        prefix: Some("sha256="),
        signed_content: Some("{body}"),
        timestamp_header: None,
        id_header: None,
        id_pointer: None,
        type_header: Some("x-github-event"),
        defaults: Defaults {
            event_type: None,
            occurred_at: None,
        },
        slack_url_verification: false,
    },
    Preset {
        name: "shopify",
        header: Some("x-shopify-hmac-sha256"),
        algorithm: Some("sha256"),
        encoding: Some("base64"),
        prefix: None,
        signed_content: Some("{body}"),
        timestamp_header: None,
        id_header: None,
        id_pointer: None,
        type_header: Some("x-shopify-topic"),
        // Shopify delivers out of order and retries for hours: its resources' change time
        // orders them.
        defaults: Defaults {
            event_type: None,
            occurred_at: Some("/updated_at"),
        },
        slack_url_verification: false,
    },
    Preset {
        name: "slack",
        header: Some("x-slack-signature"),
        algorithm: Some("sha256"),
        encoding: Some("hex"),
        prefix: Some("v0="),
        signed_content: Some("v0:{timestamp}:{body}"),
        timestamp_header: Some("x-slack-request-timestamp"),
        id_header: None,
        id_pointer: Some("/event_id"),
        type_header: None,
        defaults: Defaults {
            event_type: Some("/event/type"),
            occurred_at: Some("/event_time"),
        },
        slack_url_verification: true,
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

/// One piece of the signed content.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Body,
    Timestamp,
    Id,
}

/// A generic HMAC source.
pub struct HmacSource {
    keys: Keys,
    header: HeaderName,
    encoding: Encoding,
    prefix: String,
    signed: Vec<Part>,
    timestamp_header: Option<HeaderName>,
    tolerance_secs: i64,
    /// Only when the template signs it (`{id}`).
    id_header: Option<HeaderName>,
    /// The first byte of the text after `{id}` in the template, which an id may not hold.
    id_separator: Option<u8>,
    id_pointer: Option<String>,
    /// How long a digest id is a duplicate (0: contacts-svc's whole dedup TTL).
    dedup_window_secs: u32,
    type_header: Option<HeaderName>,
    slack_url_verification: bool,
    mapping: Mapping,
}

impl fmt::Debug for HmacSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacSource")
            .field("secrets", &self.keys)
            .field("header", &self.header)
            .field("encoding", &self.encoding)
            .field("prefix", &self.prefix)
            .field("signed", &self.signed)
            .field("timestamp_header", &self.timestamp_header)
            .field("tolerance_secs", &self.tolerance_secs)
            .field("id_header", &self.id_header)
            .field("id_pointer", &self.id_pointer)
            .field("dedup_window_secs", &self.dedup_window_secs)
            .field("type_header", &self.type_header)
            .field("mapping", &self.mapping)
            .finish()
    }
}

/// Parses a signed-content template: literal text and `{body}` (exactly once),
/// `{timestamp}`, `{id}`.
fn template(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("{s:?} has a '{{' without its '}}'"))?;
                parts.push(match &rest[1..end] {
                    "body" => Part::Body,
                    "timestamp" => Part::Timestamp,
                    "id" => Part::Id,
                    other => {
                        return Err(format!(
                            "{s:?} has an unknown placeholder {{{other}}} (known: {{body}}, \
                             {{timestamp}}, {{id}})"
                        ));
                    }
                });
                rest = &rest[end + 1..];
            }
            Some(at) => {
                parts.push(Part::Text(rest[..at].to_owned()));
                rest = &rest[at..];
            }
            None => {
                parts.push(Part::Text(rest.to_owned()));
                rest = "";
            }
        }
    }
    if parts.iter().filter(|p| **p == Part::Body).count() != 1 {
        return Err(format!("{s:?} must hold {{body}} exactly once"));
    }
    Ok(parts)
}

fn header_name(setup: &mut Setup<'_>, key: &str, value: Option<&str>) -> Option<HeaderName> {
    let value = value?;
    let parsed = HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("{value:?} is not a header name"));
    setup.check(key, parsed)
}

impl Kind for HmacSource {
    const KIND: &'static str = "hmac";
    type Config = RawConfig;

    fn from_config(raw: RawConfig, setup: &mut Setup<'_>) -> Option<Self> {
        let preset = match raw.preset.as_deref() {
            None => Some(Preset::default()),
            Some(name) => {
                let found = PRESETS.iter().find(|p| p.name == name).copied();
                if found.is_none() {
                    let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
                    setup.problem(
                        "preset",
                        format!("unknown preset {name:?} (known: {})", known.join(", ")),
                    );
                }
                found
            }
        };
        let preset = preset.unwrap_or_default();
        // A key set in the file wins over the preset's.
        let pick = |own: &Option<String>, preset: Option<&'static str>| {
            own.clone().or_else(|| preset.map(str::to_owned))
        };
        let keys = setup.secrets("secrets", &raw.secrets, |s| {
            Ok(s.expose().as_bytes().to_vec())
        });
        let header = match pick(&raw.header, preset.header) {
            Some(h) => header_name(setup, "header", Some(&h)),
            // An unknown preset is the one problem to report, not every key it would fill.
            None if raw.preset.is_some() => None,
            None => {
                setup.problem(
                    "header",
                    "is required (the header that carries the signature), or a preset: github, \
                     shopify, slack",
                );
                None
            }
        };
        let algorithm = match pick(&raw.algorithm, preset.algorithm).as_deref() {
            None | Some("sha256") => Some(Algorithm::Sha256),
            Some("sha512") => Some(Algorithm::Sha512),
            Some(other) => {
                setup.problem("algorithm", format!("{other:?} is not sha256 or sha512"));
                None
            }
        };
        let encoding = match pick(&raw.encoding, preset.encoding).as_deref() {
            None | Some("hex") => Some(Encoding::Hex),
            Some("base64") => Some(Encoding::Base64),
            Some(other) => {
                setup.problem("encoding", format!("{other:?} is not hex or base64"));
                None
            }
        };
        let prefix = pick(&raw.prefix, preset.prefix).unwrap_or_default();
        let signed = pick(&raw.signed_content, preset.signed_content)
            .map_or_else(|| Ok(vec![Part::Body]), |t| template(&t));
        let signed = setup.check("signed_content", signed);
        let timestamp_header = header_name(
            setup,
            "timestamp_header",
            pick(&raw.timestamp_header, preset.timestamp_header).as_deref(),
        );
        let id_header = header_name(
            setup,
            "id_header",
            pick(&raw.id_header, preset.id_header).as_deref(),
        );
        let type_header = header_name(
            setup,
            "type_header",
            pick(&raw.type_header, preset.type_header).as_deref(),
        );
        let id_pointer =
            pick(&raw.id_pointer, preset.id_pointer).and_then(|p| setup.pointer("id_pointer", &p));
        let tolerance = setup.check("tolerance_secs", signature::tolerance(raw.tolerance_secs));
        let mut dedup_window_secs = None;
        if let Some(signed) = &signed {
            let stamped = signed.contains(&Part::Timestamp);
            if stamped && timestamp_header.is_none() {
                setup.problem(
                    "timestamp_header",
                    "is required: signed_content holds {timestamp}",
                );
            }
            if !stamped && timestamp_header.is_some() {
                setup.problem(
                    "timestamp_header",
                    "is set, but signed_content does not hold {timestamp}: an unsigned \
                     timestamp proves nothing",
                );
            }
            if !stamped && raw.tolerance_secs.is_some() {
                setup.problem(
                    "tolerance_secs",
                    "is set, but signed_content does not hold {timestamp}: nothing bounds \
                     a replay of this sender's deliveries but deduplication",
                );
            }
            if signed.contains(&Part::Id) && id_header.is_none() {
                setup.problem("id_header", "is required: signed_content holds {id}");
            }
            if !signed.contains(&Part::Id) && id_header.is_some() {
                setup.problem(
                    "id_header",
                    "is not signed (signed_content has no {id}): an id a sender of a captured \
                     request could change cannot deduplicate; leave it out (then the id is \
                     id_pointer's, else the digest of the type and body)",
                );
            }
            // 0: contacts-svc's whole dedup TTL.
            let default = if stamped {
                TIMESTAMPED_DEDUP_WINDOW_SECS
            } else {
                0
            };
            dedup_window_secs = setup.dedup_window(raw.dedup_window_secs, default);
        }
        let mapping = Mapping::from_config(raw.map, raw.actions, preset.defaults, setup);
        let (keys, header, algorithm, encoding, signed, tolerance_secs, dedup_window_secs, mapping) = (
            keys?,
            header?,
            algorithm?,
            encoding?,
            signed?,
            tolerance?,
            dedup_window_secs?,
            mapping?,
        );
        setup.ok().then(|| Self {
            id_separator: separator_after_id(&signed),
            keys: Keys::new(algorithm, keys.iter().map(Vec::as_slice)),
            header,
            encoding,
            prefix,
            signed,
            timestamp_header,
            tolerance_secs,
            id_header,
            id_pointer,
            dedup_window_secs,
            type_header,
            slack_url_verification: preset.slack_url_verification,
            mapping,
        })
    }
}

/// How an error names a header: the presets' by their names, a configured one by its
/// role (the error type holds static text).
fn label(name: &HeaderName) -> &'static str {
    match name.as_str() {
        "x-hub-signature-256" => "X-Hub-Signature-256",
        "x-shopify-hmac-sha256" => "X-Shopify-Hmac-Sha256",
        "x-slack-signature" => "X-Slack-Signature",
        "x-slack-request-timestamp" => "X-Slack-Request-Timestamp",
        _ => "signature",
    }
}

impl HmacSource {
    /// The id this delivery is deduplicated by (module docs, "Event ids"), and whether it
    /// is a digest of the content.
    fn event_id(&self, d: Delivery<'_>, event_type: Option<&str>) -> (String, bool) {
        let signed_header = self
            .id_header
            .as_ref()
            .and_then(|h| one_header(d.headers, h.as_str(), "id").ok().flatten())
            .map(header_id);
        let from_body = || {
            let p = self.id_pointer.as_deref()?;
            let body: Value = serde_json::from_slice(d.body).ok()?;
            id_at(&body, p)
        };
        match signed_header.or_else(from_body) {
            Some(id) => (id, false),
            None => (content_digest_id(event_type, d.body), true),
        }
    }
}

/// The first byte of the text right after `{id}` in a template, if any.
fn separator_after_id(signed: &[Part]) -> Option<u8> {
    let at = signed.iter().position(|p| *p == Part::Id)?;
    match signed.get(at + 1)? {
        Part::Text(t) => t.bytes().next(),
        _ => None,
    }
}

/// The digest id of the event type (when the sender names one in a header) and the
/// body: the same delivery again is the same id, another topic of the same body is not.
fn content_digest_id(event_type: Option<&str>, body: &[u8]) -> String {
    match event_type {
        Some(t) => digest_id(&[t.as_bytes(), b"\n", body]),
        None => digest_id(&[body]),
    }
}

impl Source for HmacSource {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn recorded_headers(&self, headers: &http::HeaderMap) -> Vec<v1::Header> {
        let names = [&self.id_header, &self.type_header];
        super::headers_named(headers, names.into_iter().flatten().map(HeaderName::as_str))
    }

    fn verify(&self, d: Delivery<'_>, now: i64) -> Result<(), VerifyError> {
        let name = label(&self.header);
        let value = one_header(d.headers, self.header.as_str(), name)?
            .ok_or(VerifyError::MissingHeader(name))?;
        let encoded = value
            .get(..self.prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(self.prefix.as_bytes()))
            .map(|_| &value[self.prefix.len()..])
            .ok_or(VerifyError::Malformed("signature without its prefix"))?;
        let mac = match self.encoding {
            Encoding::Hex => hex::decode(encoded).ok(),
            Encoding::Base64 => BASE64.decode(encoded).ok(),
        }
        .ok_or(VerifyError::Malformed("signature is not in its encoding"))?;
        let timestamp = match &self.timestamp_header {
            None => None,
            Some(h) => {
                let name = label(h);
                let value = one_header(d.headers, h.as_str(), name)?
                    .ok_or(VerifyError::MissingHeader(name))?;
                let ts = signature::parse_timestamp(value)?;
                signature::check_fresh(ts, now, self.tolerance_secs)?;
                Some(value)
            }
        };
        let id = match &self.id_header {
            Some(h) => {
                let id = one_header(d.headers, h.as_str(), "id")?
                    .ok_or(VerifyError::MissingHeader("id"))?;
                // An id holding the text that follows it in the template could be split
                // elsewhere and the same bytes read as another id and timestamp.
                if self.id_separator.is_some_and(|sep| id.contains(&sep)) {
                    return Err(VerifyError::Malformed(
                        "id holds the separator that follows it in the signed content",
                    ));
                }
                Some(id)
            }
            None => None,
        };
        let signed: Vec<&[u8]> = self
            .signed
            .iter()
            .map(|part| match part {
                Part::Text(t) => t.as_bytes(),
                Part::Body => d.body,
                Part::Timestamp => timestamp.unwrap_or_default(),
                Part::Id => id.unwrap_or_default(),
            })
            .collect();
        if self.keys.any_matches(&signed, &[mac]) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn normalize(&self, source: &str, d: Delivery<'_>, received_at_ms: i64) -> v1::WebhookEvent {
        let event_type = self.type_header.as_ref().and_then(|h| {
            one_header(d.headers, h.as_str(), "type")
                .ok()
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok())
        });
        let (id, digest) = self.event_id(d, event_type);
        let given = Given {
            source,
            kind: Self::KIND,
            id: &id,
            event_type,
            occurred_at_ms: None,
            received_at_ms,
        };
        let event = self.mapping.event(given, d.body);
        if digest {
            v1::WebhookEvent {
                dedup_window_secs: self.dedup_window_secs,
                ..event
            }
        } else {
            event
        }
    }

    /// Slack's `url_verification`: signed like events, answered with its challenge.
    fn handshake(&self, d: Delivery<'_>) -> Option<Value> {
        if !self.slack_url_verification {
            return None;
        }
        let body: Value = serde_json::from_slice(d.body).ok()?;
        if body.get("type")?.as_str()? != "url_verification" {
            return None;
        }
        let challenge = body.get("challenge")?.as_str()?;
        Some(json!({ "challenge": challenge }))
    }
}

#[cfg(test)]
mod tests;
