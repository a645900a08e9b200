//! `Status` objects: how every failure (and some successes) reach a Kubernetes client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::Error;

/// A `Status` object with `status: Failure`.
pub fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

/// A JSON response with `Content-Type: application/json` (kubectl refuses anything else).
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl Error {
    /// The `Status` object a client sees for this error.
    pub fn to_status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let details = match self {
            Error::NotFound { resource, name }
            | Error::AlreadyExists { resource, name }
            | Error::Conflict { resource, name } => {
                Some(json!({"name": name, "group": resource.group(), "kind": resource.plural()}))
            }
            Error::Invalid { kind, name, .. } => Some(json!({"name": name, "kind": kind})),
            Error::WebhookFailed { webhook, reason } => Some(
                json!({"causes": [{"message": format!("failed calling webhook \"{webhook}\": {reason}")}]}),
            ),
            _ => None,
        };
        failure(code, reason, &self.to_string(), details)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, _) = self.code_and_reason();
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.to_status())
    }
}

/// A Status failure response for errors that are not store errors (unknown path, wrong method).
pub fn failure_response(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, &failure(code.as_u16(), reason, message, None))
}
