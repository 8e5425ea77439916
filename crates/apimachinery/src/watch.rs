//! Watch-stream framing: one `{"type":…,"object":…}` JSON document per line, as the
//! apiserver's JSON watch encoder writes it (kubectl-wire.md §3.2 "get -w").

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
    /// `BOOKMARK` (only `metadata.resourceVersion` matters).
    Bookmark,
    /// `ERROR` (the object is a `Status`).
    Error,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// Frames one event: `{"type":"ADDED","object":<object_json>}\n`. `object_json` must be one
/// JSON value without a trailing newline.
pub fn frame(kind: EventType, object_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(object_json.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object_json);
    out.extend_from_slice(b"}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_one_line_of_valid_json() {
        let line = frame(EventType::Deleted, br#"{"kind":"APIService"}"#);
        assert_eq!(
            line,
            b"{\"type\":\"DELETED\",\"object\":{\"kind\":\"APIService\"}}\n"
        );
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        assert_eq!(v["type"], "DELETED");
    }
}
