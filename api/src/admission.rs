//! The validating admission webhook every IDC's API server calls before it deletes a Pod or a
//! VirtualMachineInstance labelled `eci.io/instance`, or a namespace the platform manages:
//! `POST /admission/idcs/{idc}` takes an `admission.k8s.io/v1` `AdmissionReview` and answers one.
//! The deletion of a live instance's object, which only a release through the API may end, is
//! refused with a message naming the instance; the objects of released instances go, so the
//! platform's own reconcilers are never refused. Every decision is audited by the store.
//!
//! The router is served apart from the public API, over TLS on its own listener (an API server
//! calls webhooks over HTTPS only), and asks for no API key: an API server sends none. What it
//! can be told is limited to what a deletion review carries, and it can only refuse a deletion.
//!
//! A failure to decide (the database unreachable, an IDC the platform does not know) refuses the
//! deletion with a message that says so, which is what `failurePolicy: Fail` would do anyway: a
//! protected object is never deleted unchecked.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use eci_core::IdcId;
use eci_core::ids::LABEL_INSTANCE;
use eci_core::risk::Verdict;
use eci_store::risk::ReviewedObject;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::AppState;
use crate::error::ApiError;

/// The longest review read: an API server sends the deleted object whole, and Kubernetes keeps no
/// object larger than 1.5 MiB.
const MAX_REVIEW_BYTES: usize = 2 * 1024 * 1024;

/// The webhook's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admission/idcs/{idc}", post(review))
        .fallback(|| async {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// An `AdmissionReview` as an API server sends it: only what a deletion's review needs is read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReview {
    api_version: String,
    kind: String,
    request: AdmissionRequest,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    resource: GroupVersionResource,
    operation: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    old_object: Option<ReviewedMeta>,
    #[serde(default)]
    user_info: UserInfo,
}

#[derive(Debug, Deserialize)]
struct GroupVersionResource {
    #[serde(default)]
    group: String,
    resource: String,
}

#[derive(Debug, Default, Deserialize)]
struct ReviewedMeta {
    #[serde(default)]
    metadata: ObjectMeta,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

/// The answer, an `AdmissionReview` carrying the response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewAnswer {
    api_version: &'static str,
    kind: &'static str,
    response: AdmissionResponse,
}

#[derive(Debug, Serialize)]
struct AdmissionResponse {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<ResponseStatus>,
}

#[derive(Debug, Serialize)]
struct ResponseStatus {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ReviewAnswer {
    fn new(uid: String, allowed: bool, refusal: Option<(u16, &'static str, String)>) -> ReviewAnswer {
        ReviewAnswer {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: AdmissionResponse {
                uid,
                allowed,
                status: refusal.map(|(code, reason, message)| ResponseStatus { code, reason, message }),
            },
        }
    }
}

/// What a review is about, once read: `None` when it is nothing the platform guards (another
/// operation, another resource, an object of no instance), which is allowed without a look.
fn reviewed_object<'a>(request: &'a AdmissionRequest) -> Option<ReviewedObject<'a>> {
    if request.operation != "DELETE" {
        return None;
    }
    let meta = &request.old_object.as_ref()?.metadata;
    let instance = || meta.labels.get(LABEL_INSTANCE).map(String::as_str).filter(|i| !i.is_empty());
    match (request.resource.group.as_str(), request.resource.resource.as_str()) {
        ("", "pods") => Some(ReviewedObject::Pod { instance: instance()? }),
        ("kubevirt.io", "virtualmachineinstances") => {
            Some(ReviewedObject::VirtualMachineInstance { instance: instance()? })
        }
        ("", "namespaces") => {
            let name = if meta.name.is_empty() { request.name.as_str() } else { meta.name.as_str() };
            Some(ReviewedObject::Namespace { name })
        }
        _ => None,
    }
}

async fn review(
    State(state): State<AppState>,
    Path(idc): Path<String>,
    body: Result<Json<AdmissionReview>, JsonRejection>,
) -> Result<Json<ReviewAnswer>, ApiError> {
    let Json(review) = body.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(ApiError::invalid(
            "apiVersion",
            format!(
                "must be an admission.k8s.io/v1 AdmissionReview, not {} {}",
                review.api_version, review.kind
            ),
        ));
    }
    let request = &review.request;
    let uid = request.uid.clone();
    let Some(object) = reviewed_object(request) else {
        return Ok(Json(ReviewAnswer::new(uid, true, None)));
    };
    let idc = IdcId(idc);
    let subject = if request.user_info.username.is_empty() { "unknown" } else { &request.user_info.username };
    let now = state.clock.now();
    let answer = match state.store.review_cluster_deletion(&idc, object, subject, now).await {
        Ok(verdict) if verdict.verdict == Verdict::Allowed => ReviewAnswer::new(uid, true, None),
        Ok(verdict) => ReviewAnswer::new(uid, false, Some((403, "Forbidden", verdict.message))),
        Err(eci_store::Error::NotFound { what: "IDC", .. }) => {
            // Logged, not audited nor counted: anyone who reaches the listener can name any IDC,
            // and the audit log and the metrics hold the fleet's decisions only.
            tracing::warn!(idc.id = %idc, subject, "a deletion review names an IDC the platform does not know");
            ReviewAnswer::new(
                uid,
                false,
                Some((
                    403,
                    "Forbidden",
                    format!(
                        "the edge container platform knows no IDC {idc}: this cluster's webhook configuration names \
                     the wrong IDC, and nothing it guards can be deleted until it names the right one"
                    ),
                )),
            )
        }
        Err(error) => {
            tracing::error!(idc.id = %idc, error = %error, "an out-of-band deletion could not be reviewed");
            ReviewAnswer::new(
                uid,
                false,
                Some((
                    500,
                    "InternalError",
                    format!(
                        "the edge container platform could not review this deletion ({error}); try again"
                    ),
                )),
            )
        }
    };
    Ok(Json(answer))
}
