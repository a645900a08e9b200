//! Body, query and path extractors whose rejections speak the API's error format.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; a malformed one is a 400 `invalid_request` that says what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::invalid("body", e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::invalid("body", e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::invalid(
                "content-type",
                "the body must be JSON with `Content-Type: application/json`",
            )),
            // Past the body limit (axum's default, 2 MiB): refused before it is read any further.
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than the API takes (2 MiB)",
            )),
            Err(e) => Err(ApiError::invalid("body", e.body_text())),
        }
    }
}

/// Query parameters; unknown or malformed ones are a 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid("query", e.body_text()))
    }
}

/// Path parameters; one that cannot be read (say, bad percent-encoding) is a 400 `invalid_request`
/// rather than axum's plain-text answer.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::invalid("path", e.body_text()))
    }
}
