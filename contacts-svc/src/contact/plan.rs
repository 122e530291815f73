//! Which stored contacts an event concerns: the targets to merge, the identifiers to
//! claim, and the conflicts to leave alone.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use super::{ContactFields, ContactId, Identifier, Record, compatible};

/// How an event's identifiers map onto stored contacts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Contacts the event concerns, smallest (oldest) id first: the first survives and
    /// absorbs the others. Empty: a new contact.
    pub targets: Vec<ContactId>,
    /// Identifiers no contact holds yet: claim them for the survivor.
    pub claims: Vec<Identifier>,
    /// Identifiers held by a contact that may not be merged with the targets, because a
    /// provider would have two ids on one contact. They are left where they are.
    pub conflicts: Vec<(Identifier, ContactId)>,
}

/// Decides which contacts an event concerns. `hits` pairs each identifier of the event,
/// strongest first, with the live contact its index names; `contacts` holds those
/// contacts' records; `explicit` is a contact the caller named.
///
/// Identifiers join the targets in order of strength while the contact they name stays
/// compatible with what was gathered so far (starting with the event's own): no
/// provider may end up with two ids on one contact, and a contact reached through a
/// phone number alone must not hold another email (a family or office line is shared
/// by different people). A weaker identifier therefore never pulls in a contact that a
/// stronger one rules out.
pub fn plan(
    own: &ContactFields,
    explicit: Option<&ContactId>,
    hits: &[(Identifier, Option<ContactId>)],
    contacts: &BTreeMap<ContactId, impl Borrow<Record>>,
) -> Plan {
    let mut plan = Plan::default();
    let mut external = own.external_ids.clone();
    let mut email = own.email.as_ref().map(|e| e.normalized.clone());
    let mut take = |id: &ContactId, through_phone: bool| -> bool {
        let Some(r) = contacts.get(id).map(Borrow::borrow) else {
            return true;
        };
        let their_email = r.email.as_ref().map(|e| &e.v.normalized);
        if !compatible(&external, &r.external_ids)
            || (through_phone
                && email.is_some()
                && their_email.is_some_and(|e| Some(e) != email.as_ref()))
        {
            return false;
        }
        for (k, v) in &r.external_ids {
            external.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if email.is_none() {
            email = their_email.cloned();
        }
        true
    };
    if let Some(id) = explicit {
        take(id, false);
        plan.targets.push(id.clone());
    }
    for (ident, hit) in hits {
        match hit {
            None => plan.claims.push(ident.clone()),
            Some(id) if plan.targets.contains(id) => {}
            Some(id) => {
                if take(id, matches!(ident, Identifier::Phone(_))) {
                    plan.targets.push(id.clone());
                } else {
                    plan.conflicts.push((ident.clone(), id.clone()));
                }
            }
        }
    }
    // The oldest contact survives, a rule that does not depend on arrival order.
    plan.targets.sort();
    plan
}
