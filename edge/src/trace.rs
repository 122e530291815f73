//! A webhook request's correlation ids: `X-Request-Id` and the W3C `traceparent`,
//! continued from the caller or begun here, carried to contacts-svc with each event.

/// The request's correlation ids: `X-Request-Id` (the caller's when sane, else new) and
/// a W3C `traceparent` continuing the caller's trace or starting one, with a new span
/// for this hop. Both travel to contacts-svc as gRPC metadata.
#[derive(Clone, Debug)]
pub struct Trace {
    pub request_id: String,
    pub trace_id: String,
    pub traceparent: String,
}

impl Trace {
    pub fn of(headers: &http::HeaderMap) -> Self {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
        let incoming = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (trace_id, flags) = incoming
            .unwrap_or_else(|| (uuid::Uuid::new_v4().simple().to_string(), "01".to_owned()));
        let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
        Self {
            request_id,
            traceparent: format!("00-{trace_id}-{span_id}-{flags}"),
            trace_id,
        }
    }
}

/// The trace id and flags of a version-00 `traceparent` (W3C Trace Context).
fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then(|| (trace.to_owned(), flags.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(good),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), "01".into()))
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", good.parse().unwrap());
        headers.insert("x-request-id", "req-42".parse().unwrap());
        let t = Trace::of(&headers);
        assert_eq!(t.request_id, "req-42");
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            t.traceparent
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(
            !t.traceparent.contains("00f067aa0ba902b7"),
            "a new span for this hop"
        );
        let fresh = Trace::of(&http::HeaderMap::new());
        assert!(parse_traceparent(&fresh.traceparent).is_some());
        assert_eq!(fresh.request_id.len(), 32);
    }
}
