//! Body, query and path extractors whose rejections speak the API's error format.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::ApiError;

/// A JSON body of the shape `T`'s schema describes; a malformed one is a 400 `invalid_request` that
/// says what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + ToSchema> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let value = json_value(req, state).await?;
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        let components: Map<String, Value> = nested
            .into_iter()
            .filter_map(|(name, schema)| Some((name, serde_json::to_value(schema).ok()?)))
            .collect();
        let schema = serde_json::to_value(T::schema()).unwrap_or_default();
        no_array_for_an_object(&schema, &components, &value, "body")?;
        // Read again from text through axum, whose errors name the path of the value at fault
        // (`create_timeout_seconds: invalid type: ...`), which a `Value` alone cannot tell.
        let text = serde_json::to_vec(&value).expect("a JSON value always serializes");
        axum::Json::<T>::from_bytes(&text)
            .map(|axum::Json(body)| Body(body))
            .map_err(|e| ApiError::invalid("body", e.body_text()))
    }
}

/// serde reads a struct from a JSON array of its fields' values as readily as from an object; the
/// document says object, so an array where `schema` (with `$ref`s into `components`) has an object
/// is refused, naming the field.
fn no_array_for_an_object(
    schema: &Value,
    components: &Map<String, Value>,
    value: &Value,
    field: &str,
) -> Result<(), ApiError> {
    if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        return match components.get(name) {
            Some(target) => no_array_for_an_object(target, components, value, field),
            None => Ok(()),
        };
    }
    for composite in ["allOf", "anyOf", "oneOf"] {
        for part in schema[composite].as_array().into_iter().flatten() {
            no_array_for_an_object(part, components, value, field)?;
        }
    }
    let object = |t: &Value| t == "object";
    let says_object =
        object(&schema["type"]) || schema["type"].as_array().is_some_and(|t| t.iter().any(object));
    let inner = |name: &str| if field == "body" { name.to_string() } else { format!("{field}.{name}") };
    match value {
        Value::Array(_) if says_object => {
            Err(ApiError::invalid(field, "must be a JSON object, not an array"))
        }
        Value::Array(items) => match schema.get("items") {
            Some(item) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| no_array_for_an_object(item, components, v, &format!("{field}[{i}]"))),
            None => Ok(()),
        },
        Value::Object(fields) => fields.iter().try_for_each(|(name, v)| {
            let of_field = schema["properties"].get(name).or(schema.get("additionalProperties"));
            match of_field {
                Some(s) if s.is_object() => no_array_for_an_object(s, components, v, &inner(name)),
                _ => Ok(()),
            }
        }),
        _ => Ok(()),
    }
}

/// The body as JSON, however it is shaped.
async fn json_value<S: Send + Sync>(req: Request, state: &S) -> Result<Value, ApiError> {
    match axum::Json::<Value>::from_request(req, state).await {
        Ok(axum::Json(v)) => Ok(v),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::invalid("body", e.body_text())),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
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
