//! Reading a mapping from the configuration: `[sources.<name>.map]` and
//! `[[sources.<name>.actions]]` checked key by key, every problem recorded with its
//! key, and every key an action does not use refused (it would be ignored silently).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Action, Defaults, Effect, Mapping, Money, STATUSES, Status, Values, is_currency_code,
    known_status,
};
use crate::sources::Setup;

const EFFECTS: &str = "contact, purchase, refund, add_tags, remove_tags, appointment";

/// `[sources.<name>.map]`: JSON Pointers into the payload.
#[derive(Debug, Default, Deserialize)]
pub struct RawMap {
    email: Option<String>,
    phone: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    phone_region: Option<String>,
    external_id: Option<String>,
    /// A name, not a pointer: the namespace of `external_id`.
    external_id_system: Option<String>,
    occurred_at: Option<String>,
    event_type: Option<String>,
}

/// One `[[sources.<name>.actions]]` table. Which keys it may have depends on `do`.
#[derive(Debug, Default, Deserialize)]
pub struct RawAction {
    types: Option<Vec<String>>,
    #[serde(rename = "do")]
    effect: Option<String>,
    purchase_id: Option<String>,
    refund_id: Option<String>,
    amount: Option<String>,
    amount_unit: Option<String>,
    currency: Option<String>,
    currency_value: Option<String>,
    description: Option<String>,
    tags: Option<String>,
    tags_value: Option<Vec<String>>,
    appointment_id: Option<String>,
    status: Option<String>,
    status_value: Option<String>,
    statuses: Option<BTreeMap<String, String>>,
    start_time: Option<String>,
    end_time: Option<String>,
    title: Option<String>,
    calendar_id: Option<String>,
}

impl Mapping {
    /// Checks the `map` and `actions` tables of a source, recording every problem in
    /// `setup` (keys under `map.` and `actions[i].`). `None` when there was one.
    pub fn from_config(
        map: Option<toml::Table>,
        actions: Option<Vec<toml::Table>>,
        defaults: Defaults,
        setup: &mut Setup<'_>,
    ) -> Option<Self> {
        let map: RawMap = match map {
            Some(t) => setup.deserialize("map", toml::Value::Table(t))?,
            None => RawMap::default(),
        };
        let mut pointer = |key: &str, p: Option<String>| -> Option<String> {
            p.and_then(|p| setup.pointer(&format!("map.{key}"), &p))
        };
        let email = pointer("email", map.email);
        let phone = pointer("phone", map.phone);
        let first_name = pointer("first_name", map.first_name);
        let last_name = pointer("last_name", map.last_name);
        let name = pointer("name", map.name);
        let region = pointer("phone_region", map.phone_region);
        let occurred_at = pointer("occurred_at", map.occurred_at)
            .or_else(|| defaults.occurred_at.map(str::to_owned));
        let event_type = pointer("event_type", map.event_type)
            .or_else(|| defaults.event_type.map(str::to_owned));
        let external_id = pointer("external_id", map.external_id);
        let system = match map.external_id_system {
            Some(s) if external_id.is_none() => {
                setup.problem(
                    "map.external_id_system",
                    "names the system of external_id, which is not set",
                );
                Some(s)
            }
            Some(s) if !is_system_name(&s) => {
                setup.problem(
                    "map.external_id_system",
                    format!("{s:?} is not 1 to 64 of a-z, 0-9, '_' and '-'"),
                );
                None
            }
            Some(s) => Some(s),
            None => Some(setup.name().to_owned()),
        };
        // Each action read and checked in turn, so its problems are listed together.
        let actions: Vec<Action> = actions
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, table)| {
                let at = format!("actions[{i}]");
                let raw: RawAction = setup.deserialize(&at, toml::Value::Table(table))?;
                Action::from_config(&at, raw, setup)
            })
            .collect();
        setup.ok().then(|| Self {
            email,
            phone,
            first_name,
            last_name,
            name,
            phone_region: region,
            external_id: external_id.zip(system),
            occurred_at,
            event_type,
            actions,
        })
    }
}

fn is_system_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Action {
    fn from_config(at: &str, raw: RawAction, setup: &mut Setup<'_>) -> Option<Self> {
        let key = |k: &str| format!("{at}.{k}");
        let Some(effect) = raw.effect.clone() else {
            setup.problem(&key("do"), format!("is required, one of: {EFFECTS}"));
            return None;
        };
        let types: Vec<String> = raw
            .types
            .iter()
            .flatten()
            .map(|t| t.trim().to_owned())
            .collect();
        if raw.types.is_some() && types.is_empty() {
            setup.problem(
                &key("types"),
                "is empty (leave it out for an action that takes every type)",
            );
        }
        for (i, t) in types.iter().enumerate() {
            if t.is_empty() {
                setup.problem(&key(&format!("types[{i}]")), "is empty");
            }
        }
        let mut r = Reader {
            at,
            raw,
            effect: effect.clone(),
            setup,
        };
        let effect = match effect.as_str() {
            "contact" => Some(Effect::Contact),
            "purchase" => {
                let purchase_id = r.raw.purchase_id.take();
                let purchase_id = r.required("purchase_id", purchase_id);
                let money = r.money();
                let description = r.raw.description.take();
                let description = r.pointer("description", description);
                Some(Effect::Purchase {
                    purchase_id: purchase_id?,
                    money: money?,
                    description,
                })
            }
            "refund" => {
                let refund_id = r.raw.refund_id.take();
                let refund_id = r.required("refund_id", refund_id);
                let purchase_id = r.raw.purchase_id.take();
                let purchase_id = r.pointer("purchase_id", purchase_id);
                let money = r.money();
                Some(Effect::Refund {
                    refund_id: refund_id?,
                    purchase_id,
                    money: money?,
                })
            }
            "add_tags" | "remove_tags" => r.tags().map(|tags| Effect::Tags {
                add: effect == "add_tags",
                tags,
            }),
            "appointment" => {
                let appointment_id = r.raw.appointment_id.take();
                let appointment_id = r.required("appointment_id", appointment_id);
                let status = r.status();
                let [start_time, end_time, title, calendar_id] = [
                    ("start_time", r.raw.start_time.take()),
                    ("end_time", r.raw.end_time.take()),
                    ("title", r.raw.title.take()),
                    ("calendar_id", r.raw.calendar_id.take()),
                ]
                .map(|(k, p)| r.pointer(k, p));
                Some(Effect::Appointment {
                    appointment_id: appointment_id?,
                    status: status?,
                    start_time,
                    end_time,
                    title,
                    calendar_id,
                })
            }
            other => {
                r.setup.problem(
                    &key("do"),
                    format!("unknown action {other:?} (known: {EFFECTS})"),
                );
                return None;
            }
        };
        r.unused();
        Some(Self {
            types,
            effect: effect?,
        })
    }
}

/// Reads the keys of one action, recording problems; at the end, every key this kind of
/// action does not use is a problem too (it would be silently ignored otherwise).
struct Reader<'s, 'a> {
    at: &'s str,
    raw: RawAction,
    effect: String,
    setup: &'s mut Setup<'a>,
}

impl Reader<'_, '_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.at)
    }

    /// The JSON Pointer `value` of key `k`, checked; `None` when absent or not one.
    fn pointer(&mut self, k: &str, value: Option<String>) -> Option<String> {
        let key = self.key(k);
        value.and_then(|p| self.setup.pointer(&key, &p))
    }

    /// Like `pointer`, but a missing value is a problem.
    fn required(&mut self, k: &str, value: Option<String>) -> Option<String> {
        if value.is_none() {
            let key = self.key(k);
            let effect = self.effect.clone();
            self.setup.problem(
                &key,
                format!("is required by a {effect:?} action (a JSON Pointer)"),
            );
        }
        self.pointer(k, value)
    }

    fn money(&mut self) -> Option<Money> {
        let amount = self.raw.amount.take();
        let amount = self.required("amount", amount);
        let major_units = match self.raw.amount_unit.take().as_deref() {
            None | Some("minor") => Some(false),
            Some("major") => Some(true),
            Some(other) => {
                let key = self.key("amount_unit");
                self.setup.problem(
                    &key,
                    format!(
                        "{other:?} is not \"minor\" (cents: 4900) or \"major\" (units: \"49.00\")"
                    ),
                );
                None
            }
        };
        let currency = self.raw.currency.take();
        let has_pointer = currency.is_some();
        let currency = self.pointer("currency", currency);
        let currency_value = match self.raw.currency_value.take() {
            Some(c) if is_currency_code(&c) => Some(c.to_ascii_lowercase()),
            Some(c) => {
                let key = self.key("currency_value");
                self.setup.problem(
                    &key,
                    format!("{c:?} is not an ISO 4217 code such as \"usd\""),
                );
                return None;
            }
            None if !has_pointer => {
                let key = self.key("currency");
                let effect = self.effect.clone();
                self.setup.problem(
                    &key,
                    format!(
                        "is required by a {effect:?} action: a JSON Pointer, or currency_value \
                         for a fixed currency"
                    ),
                );
                return None;
            }
            None => None,
        };
        Some(Money {
            amount: amount?,
            major_units: major_units?,
            currency,
            currency_value,
        })
    }

    fn tags(&mut self) -> Option<Values> {
        let pointer = self.raw.tags.take();
        let has_pointer = pointer.is_some();
        let pointer = self.pointer("tags", pointer);
        let constant = self.raw.tags_value.take().unwrap_or_default();
        if !has_pointer && constant.is_empty() {
            let key = self.key("tags");
            self.setup.problem(
                &key,
                "is required: a JSON Pointer to a tag or a list of tags, or tags_value \
                 for fixed tags",
            );
            return None;
        }
        if constant.iter().any(|t| t.trim().is_empty()) {
            let key = self.key("tags_value");
            self.setup.problem(&key, "holds an empty tag");
            return None;
        }
        Some(Values { pointer, constant })
    }

    fn status(&mut self) -> Option<Status> {
        let pointer = self.raw.status.take();
        let has_pointer = pointer.is_some();
        let pointer = self.pointer("status", pointer);
        let constant = match self.raw.status_value.take() {
            None => None,
            Some(v) => match known_status(&v) {
                Some(s) => Some(s),
                None => {
                    let key = self.key("status_value");
                    self.setup
                        .problem(&key, format!("{v:?} is not one of: {STATUSES}"));
                    return None;
                }
            },
        };
        let mut words = BTreeMap::new();
        for (word, status) in self.raw.statuses.take().unwrap_or_default() {
            match known_status(&status) {
                Some(s) => {
                    words.insert(word.trim().to_lowercase(), s);
                }
                None => {
                    let key = self.key(&format!("statuses.{word}"));
                    self.setup
                        .problem(&key, format!("{status:?} is not one of: {STATUSES}"));
                }
            }
        }
        if !has_pointer && constant.is_none() {
            let key = self.key("status");
            self.setup.problem(
                &key,
                "is required by an \"appointment\" action: a JSON Pointer, or status_value \
                 for a fixed status",
            );
            return None;
        }
        Some(Status {
            pointer,
            constant,
            words,
        })
    }

    /// Every key left is one this action does not use.
    fn unused(&mut self) {
        let raw = std::mem::take(&mut self.raw);
        let left = [
            ("purchase_id", raw.purchase_id.is_some()),
            ("refund_id", raw.refund_id.is_some()),
            ("amount", raw.amount.is_some()),
            ("amount_unit", raw.amount_unit.is_some()),
            ("currency", raw.currency.is_some()),
            ("currency_value", raw.currency_value.is_some()),
            ("description", raw.description.is_some()),
            ("tags", raw.tags.is_some()),
            ("tags_value", raw.tags_value.is_some()),
            ("appointment_id", raw.appointment_id.is_some()),
            ("status", raw.status.is_some()),
            ("status_value", raw.status_value.is_some()),
            ("statuses", raw.statuses.is_some()),
            ("start_time", raw.start_time.is_some()),
            ("end_time", raw.end_time.is_some()),
            ("title", raw.title.is_some()),
            ("calendar_id", raw.calendar_id.is_some()),
        ];
        for (k, set) in left {
            if set {
                let key = self.key(k);
                let effect = self.effect.clone();
                self.setup
                    .problem(&key, format!("is not used by a {effect:?} action"));
            }
        }
    }
}
