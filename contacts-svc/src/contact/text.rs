//! Reading free text and ids: the one place that decides what is kept, cut, replaced or
//! refused.
//!
//! An authentic webhook event must never be lost for its content, so for events
//! ([`Reader::lenient`]) free text is cleaned and cut, an id that cannot serve as a key
//! is replaced by its digest, and a malformed field is left out; each change is noted
//! on the event's record. An internal caller is told what is wrong instead
//! ([`Reader::strict`]), and nothing is stored.
//!
//! Free text (names, tags, descriptions, titles, statuses) keeps line breaks (as `\n`)
//! and tabs, loses every other control character and surrounding whitespace, and is cut
//! at [`MAX_TEXT_BYTES`] on a character boundary.

use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// Longest free text kept, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest id usable as a key.
pub const MAX_ID_LEN: usize = 256;

/// `s` with line breaks as `\n`, tabs kept, every other control character removed, and
/// surrounding whitespace trimmed.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                // CR LF and a lone CR are both one line break.
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    let trimmed = out.trim();
    if trimmed.len() == out.len() {
        out
    } else {
        trimmed.to_owned()
    }
}

/// `s` cut to at most `limit` bytes on a character boundary; `None` when it fits.
pub fn cut(s: &str, limit: usize) -> Option<&str> {
    if s.len() <= limit {
        return None;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].trim_end())
}

/// Whether `s` can serve as a key: 1 to 256 bytes of printable ASCII without spaces.
pub fn usable_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The stable key of an id that cannot serve as one: `sha256:` and the hex digest.
pub fn digest_id(s: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes())))
}

/// Reads values of an event or a call, lenient or strict as the module docs describe.
#[derive(Debug)]
pub struct Reader<'a> {
    /// `Some` for events: where what was changed is noted.
    notes: Option<&'a mut Vec<String>>,
}

impl<'a> Reader<'a> {
    /// For webhook events: keep what can be kept, note what was changed.
    pub fn lenient(notes: &'a mut Vec<String>) -> Self {
        Self { notes: Some(notes) }
    }

    /// For internal callers: refuse what is not right.
    pub fn strict() -> Self {
        Self { notes: None }
    }

    /// Whether malformed values are left out (with a note) rather than refused.
    pub fn is_lenient(&self) -> bool {
        self.notes.is_some()
    }

    fn note(&mut self, note: String) {
        if let Some(notes) = self.notes.as_deref_mut() {
            notes.push(note);
        }
    }

    /// Free text: cleaned and cut (noted) for events; for callers, refused when it holds
    /// control characters other than line breaks and tabs, or is too long.
    pub fn text(&mut self, field: &str, s: &str) -> Result<String, Error> {
        if !self.is_lenient() {
            let s = s.trim();
            if s.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                return Err(Error::invalid(field, "contains control characters"));
            }
            if s.len() > MAX_TEXT_BYTES {
                return Err(Error::invalid(field, "is longer than 1024 bytes"));
            }
            return Ok(clean(s));
        }
        let cleaned = clean(s);
        match cut(&cleaned, MAX_TEXT_BYTES) {
            None => Ok(cleaned),
            Some(kept) => {
                self.note(format!(
                    "{field} cut to {} of its {} bytes",
                    kept.len(),
                    cleaned.len()
                ));
                Ok(kept.to_owned())
            }
        }
    }

    /// A required id: one that cannot serve as a key is replaced by its digest (noted)
    /// for events, refused for callers. An empty one is refused either way: the sender
    /// of the event left out what it must say.
    pub fn id(&mut self, field: &str, s: &str) -> Result<String, Error> {
        if s.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if usable_id(s) {
            return Ok(s.to_owned());
        }
        if !self.is_lenient() {
            check_id(field, s)?;
        }
        self.note(format!(
            "{field} is not usable as a key (spaces, control characters or over 256 bytes): kept as its SHA-256"
        ));
        Ok(digest_id(s))
    }

    /// An optional id: empty stays empty.
    pub fn optional_id(&mut self, field: &str, s: &str) -> Result<String, Error> {
        if s.is_empty() {
            Ok(String::new())
        } else {
            self.id(field, s)
        }
    }

    /// A malformed value: left out with a note for events, refused for callers.
    pub fn drop(&mut self, e: Error) -> Result<(), Error> {
        if !self.is_lenient() {
            return Err(e);
        }
        self.note(format!("{e}; left out"));
        Ok(())
    }
}

/// Checks an opaque id given by a caller: non-empty, bounded, printable ASCII without
/// spaces.
pub fn check_id(field: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::invalid(field, "is longer than 256 bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        let cases = [
            ("plain", "plain"),
            ("  padded \t", "padded"),
            ("memo\nline two", "memo\nline two"),
            ("windows\r\nline", "windows\nline"),
            ("old mac\rline", "old mac\nline"),
            ("tab\there", "tab\there"),
            ("bell\u{7}null\u{0}esc\u{1b}", "bellnullesc"),
            ("c1\u{85}\u{9f}", "c1"),
            ("\u{0}\n\u{0}", ""),
            ("emoji 🎉 stays", "emoji 🎉 stays"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn cutting_respects_characters() {
        assert_eq!(cut("short", 10), None);
        assert_eq!(cut("abcdef", 3), Some("abc"));
        // "é" is two bytes: a cut in its middle keeps the whole character out.
        assert_eq!(cut("aé", 2), Some("a"));
        let name = "🎉".repeat(1000);
        let kept = cut(&name, MAX_TEXT_BYTES).unwrap();
        assert_eq!(kept.len(), 1024);
        assert!(kept.chars().all(|c| c == '🎉'));
        assert_eq!(
            cut("ab  cd", 4),
            Some("ab"),
            "no trailing space after a cut"
        );
    }

    #[test]
    fn lenient_text_is_kept_and_the_cut_noted() {
        let mut notes = Vec::new();
        let mut r = Reader::lenient(&mut notes);
        assert_eq!(r.text("f", " a\u{0}b\r\nc ").unwrap(), "ab\nc");
        let long = "x".repeat(2000);
        assert_eq!(r.text("event.description", &long).unwrap().len(), 1024);
        assert_eq!(notes, ["event.description cut to 1024 of its 2000 bytes"]);
    }

    #[test]
    fn strict_text_is_refused() {
        let mut r = Reader::strict();
        assert_eq!(r.text("f", " line\none ").unwrap(), "line\none");
        assert!(r.text("f", "bell\u{7}").is_err());
        assert!(r.text("f", &"x".repeat(1025)).is_err());
    }

    #[test]
    fn ids() {
        let mut notes = Vec::new();
        let mut r = Reader::lenient(&mut notes);
        assert_eq!(r.id("f", "evt_1").unwrap(), "evt_1");
        let spaced = r.id("f", "appt 42").unwrap();
        assert_eq!(spaced, digest_id("appt 42"));
        assert_eq!(r.id("f", "appt 42").unwrap(), spaced, "stable");
        assert!(usable_id(&spaced));
        assert!(r.id("f", "").is_err());
        assert_eq!(r.optional_id("f", "").unwrap(), "");
        assert_eq!(notes.len(), 2);
        let mut strict = Reader::strict();
        assert!(strict.id("f", "appt 42").is_err());
        assert!(strict.id("f", &"x".repeat(257)).is_err());
    }
}
