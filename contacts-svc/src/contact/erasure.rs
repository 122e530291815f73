//! What an erased contact keeps: its id, when it was erased and who asked, and nothing
//! of the person (GDPR-style erasure, `EraseContact`). No I/O; how the tombstone is
//! stored and what is cleaned around it is the store's (`store/erase.rs`).

use hookline_proto::v1;
use serde::{Deserialize, Serialize};

use super::{ContactId, timestamp};

/// The audit part of a tombstone: all that is left of an erased contact besides its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// When the erasure was first asked for, Unix ms. A repeated call keeps it.
    #[serde(rename = "at")]
    pub erased_at: i64,
    /// The caller that asked for it (see `crate::auth::Caller`).
    #[serde(rename = "by")]
    pub erased_by: String,
}

impl Erasure {
    /// The public view of the tombstone of contact `id`: the id, `erased_at` and
    /// `erased_by`, every other field empty. It is built from the erasure alone, so no
    /// stored value of the person can reach it.
    pub fn to_proto(&self, id: &ContactId) -> v1::Contact {
        v1::Contact {
            id: id.to_string(),
            erased_at: Some(timestamp(self.erased_at)),
            erased_by: self.erased_by.clone(),
            // A tombstone is in no stage of the funnel: a stage filter never matches it.
            stage: v1::Stage::Unspecified.into(),
            ..v1::Contact::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_shows_its_id_and_the_erasure_only() {
        let id = ContactId::parse("ct_0190f0e0c0a07000800000000000000a").unwrap();
        for (erasure, at_seconds) in [
            (
                Erasure {
                    erased_at: 1_796_421_417_250,
                    erased_by: "support-tool".to_owned(),
                },
                1_796_421_417,
            ),
            (
                Erasure {
                    erased_at: 0,
                    erased_by: String::new(),
                },
                0,
            ),
        ] {
            let shown = erasure.to_proto(&id);
            let want = v1::Contact {
                id: id.to_string(),
                erased_at: Some(timestamp(erasure.erased_at)),
                erased_by: erasure.erased_by.clone(),
                ..v1::Contact::default()
            };
            assert_eq!(shown, want);
            assert_eq!(shown.erased_at.map(|t| t.seconds), Some(at_seconds));
        }
    }
}
