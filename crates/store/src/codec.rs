//! Objects ⇄ stored bytes (JSON, like upstream's `--storage-media-type=application/json`).

use crate::{APIService, Error, Result, revision};

/// The object's name, which must be set and non-empty.
pub(crate) fn name_of(object: &APIService) -> Result<&str> {
    match object.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Error::InvalidObject("metadata.name must be set".into())),
    }
}

/// Encodes an object as stored JSON.
pub(crate) fn encode(object: &APIService) -> Result<Vec<u8>> {
    serde_json::to_vec(object).map_err(|e| Error::Encoding(format!("encoding an APIService: {e}")))
}

/// Decodes stored JSON; `what` names the record in the error message.
pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<APIService> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Encoding(format!("decoding stored APIService {what}: {e}")))
}

/// Returns `object` with `metadata.resourceVersion` set to `revision`.
pub(crate) fn with_revision(mut object: APIService, revision: u64) -> APIService {
    object.metadata.resource_version = Some(revision::format(revision));
    object
}

/// An object carrying only a resourceVersion (the body of a bookmark event).
pub(crate) fn bookmark(revision: u64) -> APIService {
    with_revision(APIService::default(), revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_bad_bytes() {
        let mut o = APIService::default();
        o.metadata.name = Some("v1.example.com".into());
        let o = with_revision(o, 7);
        let back = encode(&o).and_then(|b| decode(&b, "x"));
        assert_eq!(back.ok(), Some(o));
        let err = decode(b"{not json", "v1.x").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("v1.x")));
    }

    #[test]
    fn a_name_is_required() {
        assert!(matches!(
            name_of(&APIService::default()),
            Err(Error::InvalidObject(_))
        ));
        let mut o = APIService::default();
        o.metadata.name = Some(String::new());
        assert!(name_of(&o).is_err());
    }
}
