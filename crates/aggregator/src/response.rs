//! Building responses. Every error of the API goes through [`status`] (a Kubernetes `Status`
//! with its code); upstream's plain-text proxy errors go through [`text`].

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use proxy::body::{Body, full};

use apimachinery::Status;

/// `application/json`.
pub const JSON: &str = "application/json";

/// A response with these bytes and content type.
pub fn bytes(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A `Status` body with the status's own code.
pub fn status(s: &Status) -> Response<Body> {
    let code = StatusCode::from_u16(s.http_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    bytes(code, JSON, s.to_json())
}

/// A JSON body of any serializable value.
pub fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(b) => bytes(code, JSON, b),
        Err(e) => status(&Status::internal_error(&format!(
            "encoding the response: {e}"
        ))),
    }
}

/// A plain-text body (`text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`), as
/// upstream's proxy errors are written.
pub fn text(code: StatusCode, body: &str) -> Response<Body> {
    let mut r = bytes(code, "text/plain; charset=utf-8", body.to_owned());
    r.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Upstream's answer for an unavailable APIService: 503 `service unavailable` (text, §10.1).
pub fn service_unavailable() -> Response<Body> {
    text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n")
}

/// A `Warning: 299 - "<text>"` header value for each warning.
pub fn add_warnings(r: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            r.headers_mut().append(http::header::WARNING, v);
        }
    }
}
