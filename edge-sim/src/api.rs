//! The Kubernetes REST API of one simulated cluster (axum): discovery, CRUD, list, watch, Table output,
//! and the DELETEs that validating admission webhooks review (see [`crate::admission`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio::sync::watch as signal;
use tracing::{debug, instrument};

use crate::admission::{self, Admission, UserInfo};
use crate::discovery;
use crate::error::Error;
use crate::load::LoadCurves;
use crate::openapi;
use crate::query::Query;
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{failure_response, json_response};
use crate::store::{Deletion, ListOptions, Part, Store, WatchFrom};
use crate::table;
use crate::watch::{self, WatchRequest};

/// Request counters, so tests can tell a healthy watcher from one stuck relisting.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// List requests served.
    pub lists: AtomicU64,
    /// Watch requests served (including refused ones).
    pub watches: AtomicU64,
    /// Watches answered with a 410 Expired ERROR event.
    pub expired_watches: AtomicU64,
}

impl ApiStats {
    /// List requests served so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Watch requests served so far.
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// Watches refused as expired so far.
    pub fn expired_watches(&self) -> u64 {
        self.expired_watches.load(Ordering::Relaxed)
    }
}

/// What the API handlers share: one cluster's store, settings, counters and shutdown signal.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The cluster's objects.
    pub store: Arc<Store>,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Request counters.
    pub stats: Arc<ApiStats>,
    /// Flips to `true` when the cluster shuts down; ends watches and grace-period timers.
    pub shutdown: signal::Receiver<bool>,
    /// The link's fault setting: a partition cuts (or stalls) watches already streaming.
    pub link: signal::Receiver<crate::fault::Fault>,
    /// The load curves the metrics follow, and the clock they read.
    pub load: Arc<LoadCurves>,
    /// Calls the validating webhooks that review deletes.
    pub admission: Arc<Admission>,
}

/// How many times one delete is reviewed at most, its object having changed while the webhooks
/// decided; past that, the delete is a Conflict for the client to retry.
const ADMISSION_ATTEMPTS: usize = 5;

/// The router of one simulated cluster's API server.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/version", get(|| async { json_response(StatusCode::OK, &discovery::version()) }))
        .route("/api", get(|| async { json_response(StatusCode::OK, &discovery::api_versions()) }))
        .route("/apis", get(|| async { json_response(StatusCode::OK, &discovery::api_group_list()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/openapi/v3", get(|| async { json_response(StatusCode::OK, &openapi::index()) }))
        .route(
            "/openapi/v3/{*path}",
            get(|Path(path): Path<String>| async move {
                openapi::document(&path).map_or_else(not_found, |doc| json_response(StatusCode::OK, &doc))
            }),
        )
        .route("/api/{*path}", any(dispatch))
        .route("/apis/{*path}", any(dispatch))
        .fallback(|| async { not_found() })
        .with_state(state)
}

fn not_found() -> Response {
    failure_response(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
}

fn method_not_allowed(method: &Method) -> Response {
    failure_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("the server does not allow this method on the requested resource ({method})"),
    )
}

/// Where a request points: a resource, maybe a namespace, maybe one object, maybe its subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// What a path under `/api` or `/apis` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Group(String),
    ResourceList(String, String),
    Objects(Target),
}

fn parse_route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => return Some(Route::Group(group.to_string())),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    discovery::resource_list(group, version)?;
    if rest.is_empty() {
        return Some(Route::ResourceList(group.to_string(), version.to_string()));
    }
    let namespaced_path = rest[0] == "namespaces"
        && rest.len() >= 3
        && Resource::from_plural(group, rest[2]).is_some_and(Resource::namespaced);
    let (namespace, rest) =
        if namespaced_path { (Some(rest[1].to_string()), &rest[2..]) } else { (None, rest) };
    let resource = Resource::from_plural(group, rest[0])?;
    if rest.len() > 3 || (rest.len() > 1 && resource.namespaced() && namespace.is_none()) {
        return None;
    }
    Some(Route::Objects(Target {
        resource,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    }))
}

fn parse_body(body: &Bytes) -> Result<Value, Error> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn list_options(query: &Query) -> Result<ListOptions, Error> {
    Ok(ListOptions {
        labels: LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?,
        limit: match query.get("limit").filter(|l| !l.is_empty()) {
            Some(limit) => {
                Some(limit.parse().map_err(|_| Error::BadRequest(format!("invalid limit {limit:?}")))?)
            }
            None => None,
        },
        continue_token: query.get("continue").map(str::to_string),
    })
}

fn object_response(code: StatusCode, object: &Value) -> Response {
    json_response(code, object)
}

/// Handle every request under `/api/…` and `/apis/…`.
#[instrument(skip_all, fields(method = %method, path = %uri.path()))]
async fn dispatch(
    State(state): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = Query::parse(uri.query());
    if let Some(rest) = uri.path().strip_prefix("/apis/metrics.k8s.io/v1beta1/") {
        return match method {
            Method::GET => metrics(&state, rest, &query).unwrap_or_else(IntoResponse::into_response),
            _ => method_not_allowed(&method),
        };
    }
    let target = match parse_route(uri.path()) {
        None => return not_found(),
        Some(Route::Group(group)) => {
            return match discovery::api_group(&group) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => not_found(),
            };
        }
        Some(Route::ResourceList(group, version)) => {
            return match discovery::resource_list(&group, &version) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => not_found(),
            };
        }
        Some(Route::Objects(target)) => target,
    };
    debug!(?target, query = uri.query().unwrap_or_default(), "request");
    match handle(&state, &method, &target, &query, &headers, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &ApiState,
    method: &Method,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let store = &state.store;
    let resource = target.resource;
    let ns = target.namespace.as_deref();
    let part = match target.subresource.as_deref() {
        None => Part::Main,
        Some("status") if resource.has_status() => Part::Status,
        Some(_) => return Ok(not_found()),
    };
    let Some(name) = target.name.as_deref() else {
        return match *method {
            Method::GET if query.flag("watch") => Ok(watch(state, target, query, headers)),
            Method::GET => list(state, target, query, headers),
            Method::POST if resource.namespaced() == ns.is_some() => {
                let created = store.create(resource, ns, parse_body(body)?)?;
                Ok(object_response(StatusCode::CREATED, &created))
            }
            Method::DELETE if resource.deletes_collections() && resource.namespaced() == ns.is_some() => {
                delete_collection(state, target, query, headers, body).await
            }
            _ => Ok(method_not_allowed(method)),
        };
    };
    match *method {
        Method::GET => {
            let object = store.get(resource, ns, name)?;
            if table::wants_table(headers) {
                let rv = store.resource_version();
                return Ok(json_response(StatusCode::OK, &table::table(resource, &[object], rv, None)));
            }
            Ok(object_response(StatusCode::OK, &object))
        }
        Method::PUT => {
            Ok(object_response(StatusCode::OK, &store.update(resource, ns, name, parse_body(body)?, part)?))
        }
        Method::PATCH => patch(store, target, name, part, headers, body),
        Method::DELETE if part == Part::Main => delete(state, target, name, query, headers, body).await,
        _ => Ok(method_not_allowed(method)),
    }
}

fn list(state: &ApiState, target: &Target, query: &Query, headers: &HeaderMap) -> Result<Response, Error> {
    state.stats.lists.fetch_add(1, Ordering::Relaxed);
    let resource = target.resource;
    let list = state.store.list(resource, target.namespace.as_deref(), &list_options(query)?)?;
    if table::wants_table(headers) {
        let doc = table::table(resource, &list.items, list.resource_version, list.continue_token.as_deref());
        return Ok(json_response(StatusCode::OK, &doc));
    }
    let mut metadata = json!({"resourceVersion": list.resource_version.to_string()});
    if let Some(token) = &list.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = list.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json_response(StatusCode::OK, &list_document(resource, metadata, list.items)))
}

/// A `<Kind>List` of `items`.
fn list_document(resource: Resource, metadata: Value, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

/// `GET /apis/metrics.k8s.io/v1beta1/…`: pod and node metrics, lists and single objects, all read at
/// one moment of the cluster's clock.
fn metrics(state: &ApiState, rest: &str, query: &Query) -> Result<Response, Error> {
    let (store, load, now) = (&state.store, &*state.load, state.load.now());
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, rest) = match segments.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        rest => (None, rest),
    };
    let options = ListOptions { limit: None, continue_token: None, ..list_options(query)? };
    let all_pods = || store.list(Resource::Pods, None, &ListOptions::default()).map(|l| l.items);
    let doc = match (rest, namespace) {
        (["pods"], ns) => {
            let pods = store.list(Resource::Pods, ns, &options)?.items;
            crate::metrics::list(
                "PodMetricsList",
                pods.iter().filter_map(|pod| crate::metrics::pod_metrics(pod, load, now)).collect(),
            )
        }
        (["pods", name], Some(ns)) => {
            let pod = store.get(Resource::Pods, Some(ns), name)?;
            crate::metrics::pod_metrics(&pod, load, now)
                .ok_or_else(|| Error::NotFound { resource: Resource::Pods, name: name.to_string() })?
        }
        (["nodes"], None) => {
            let (nodes, pods) = (store.list(Resource::Nodes, None, &options)?.items, all_pods()?);
            crate::metrics::list(
                "NodeMetricsList",
                nodes.iter().map(|n| crate::metrics::node_metrics(n, &pods, load, now)).collect(),
            )
        }
        (["nodes", name], None) => {
            crate::metrics::node_metrics(&store.get(Resource::Nodes, None, name)?, &all_pods()?, load, now)
        }
        _ => return Ok(not_found()),
    };
    Ok(json_response(StatusCode::OK, &doc))
}

fn watch(state: &ApiState, target: &Target, query: &Query, headers: &HeaderMap) -> Response {
    state.stats.watches.fetch_add(1, Ordering::Relaxed);
    let request = match watch_request(state, target, query, headers) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let body = match watch::start(&state.store, request, state.shutdown.clone(), state.link.clone()) {
        Ok(body) => body,
        Err(error @ Error::Expired { .. }) => {
            state.stats.expired_watches.fetch_add(1, Ordering::Relaxed);
            debug!(%error, "watch from an expired resourceVersion");
            watch::expired_body(&error)
        }
        Err(error) => return error.into_response(),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    response
}

fn watch_request(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
) -> Result<WatchRequest, Error> {
    let options = list_options(query)?;
    let send_initial_events = query.flag("sendInitialEvents");
    let from = match query.get("resourceVersion").filter(|rv| !rv.is_empty()) {
        _ if send_initial_events => WatchFrom::Now,
        None | Some("0") => WatchFrom::Now,
        Some(rv) => WatchFrom::After(
            rv.parse().map_err(|_| Error::BadRequest(format!("invalid resource version: {rv}")))?,
        ),
    };
    let timeout = match query.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Some(Duration::from_secs(
            t.parse().map_err(|_| Error::BadRequest(format!("invalid timeoutSeconds {t:?}")))?,
        )),
        None => None,
    };
    Ok(WatchRequest {
        resource: target.resource,
        namespace: target.namespace.clone(),
        from,
        labels: options.labels,
        fields: options.fields,
        bookmarks: query.flag("allowWatchBookmarks"),
        bookmark_interval: state.bookmark_interval,
        timeout,
        table: table::wants_table(headers),
        send_initial_events,
    })
}

fn patch(
    store: &Store,
    target: &Target,
    name: &str,
    part: Part,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let ns = target.namespace.as_deref();
    let patch = parse_body(body)?;
    let object = match media {
        "application/merge-patch+json" => store.patch(target.resource, ns, name, &patch, part)?,
        "application/strategic-merge-patch+json" => {
            store.strategic_patch(target.resource, ns, name, &patch, part)?
        }
        // Server-side apply, simplified: a merge patch that creates the object if it is missing.
        "application/apply-patch+yaml" => match store.patch(target.resource, ns, name, &patch, part) {
            Err(Error::NotFound { .. }) if part == Part::Main => {
                let created = store.create(target.resource, ns, patch)?;
                return Ok(object_response(StatusCode::CREATED, &created));
            }
            other => other?,
        },
        _ => {
            return Ok(failure_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {media:?})"
                ),
            ));
        }
    };
    Ok(object_response(StatusCode::OK, &object))
}

/// The `DeleteOptions` of a delete: its body (empty: none), with the `gracePeriodSeconds` and
/// `propagationPolicy` of the query string where the body names none, as kube-apiserver reads them.
fn delete_options(query: &Query, body: &Bytes) -> Result<Value, Error> {
    let mut options = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(body)? };
    if !options.is_object() {
        return Err(Error::BadRequest("the DeleteOptions in the request body are not a JSON object".into()));
    }
    if options["gracePeriodSeconds"].is_null()
        && let Some(grace) = query.get("gracePeriodSeconds").and_then(|g| g.parse::<i64>().ok())
    {
        options["gracePeriodSeconds"] = json!(grace);
    }
    if options["propagationPolicy"].is_null()
        && let Some(policy) = query.get("propagationPolicy").filter(|p| !p.is_empty())
    {
        options["propagationPolicy"] = json!(policy);
    }
    Ok(options)
}

async fn delete(
    state: &ApiState,
    target: &Target,
    name: &str,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let options = delete_options(query, body)?;
    let user = UserInfo::from_headers(headers);
    match delete_admitted(state, target, name, &options, &user).await? {
        Deletion::Removed(object) => Ok(object_response(StatusCode::OK, &object)),
        Deletion::Terminating { object, grace_seconds } => {
            spawn_termination(state, target, name, &object, grace_seconds);
            Ok(object_response(StatusCode::ACCEPTED, &object))
        }
    }
}

/// Deletes one object once the validating webhooks that review deletes of its kind have allowed it;
/// when it changed while they decided, they decide again on what it is now, as kube-apiserver
/// re-runs its delete validation on a conflict.
async fn delete_admitted(
    state: &ApiState,
    target: &Target,
    name: &str,
    options: &Value,
    user: &UserInfo,
) -> Result<Deletion, Error> {
    let (store, resource, ns) = (&state.store, target.resource, target.namespace.as_deref());
    let grace = options["gracePeriodSeconds"].as_i64();
    if !admission::reviews_deletes_of(resource) {
        return store.delete(resource, ns, name, grace);
    }
    for _ in 0..ADMISSION_ATTEMPTS {
        let object = store.get(resource, ns, name)?;
        state.admission.review_delete(store, resource, &object, options, user).await?;
        let reviewed =
            object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        if let Some(deletion) = store.delete_unchanged(resource, ns, name, grace, reviewed)? {
            return Ok(deletion);
        }
        debug!(%resource, name, "the object changed while its delete was reviewed; reviewing again");
    }
    Err(Error::Conflict { resource, name: name.to_string() })
}

/// `DELETE` on a collection (deletecollection): every object the label and field selectors pick is
/// deleted on its own, each reviewed by the webhooks as a DELETE of it would be. As in
/// kube-apiserver, an object refused is kept while the others go on being deleted, and the request
/// then fails with the first refusal (or failure); when none is refused, the answer lists what was
/// deleted.
async fn delete_collection(
    state: &ApiState,
    target: &Target,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Error> {
    let options = delete_options(query, body)?;
    let user = UserInfo::from_headers(headers);
    let selected = ListOptions { limit: None, continue_token: None, ..list_options(query)? };
    let listed = state.store.list(target.resource, target.namespace.as_deref(), &selected)?;
    let (mut deleted, mut first_failure) = (Vec::new(), None);
    for object in listed.items {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        match delete_admitted(state, target, name, &options, &user).await {
            Ok(Deletion::Removed(object)) => deleted.push(object),
            Ok(Deletion::Terminating { object, grace_seconds }) => {
                spawn_termination(state, target, name, &object, grace_seconds);
                deleted.push(object);
            }
            // Gone since the list: someone else deleted it.
            Err(Error::NotFound { .. }) => {}
            Err(error) => {
                debug!(resource = %target.resource, name, %error, "an object of a collection was not deleted");
                first_failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_failure {
        return Err(error);
    }
    let metadata = json!({"resourceVersion": state.store.resource_version().to_string()});
    Ok(json_response(StatusCode::OK, &list_document(target.resource, metadata, deleted)))
}

/// Remove a terminating object once its grace period is over (or never, if the cluster shuts down first).
fn spawn_termination(state: &ApiState, target: &Target, name: &str, object: &Value, grace_seconds: u64) {
    let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let which = (target.resource, target.namespace.clone(), name.to_string(), uid.to_string());
    finish_termination_after(&state.store, &state.shutdown, which, Duration::from_secs(grace_seconds));
}

/// Remove the terminating object `(resource, namespace, name, uid)` after `delay`, unless the cluster
/// shuts down first: the seam a cluster started again on its kept objects finishes the grace periods
/// that were running when it stopped through.
pub(crate) fn finish_termination_after(
    store: &Arc<Store>,
    shutdown: &signal::Receiver<bool>,
    (resource, namespace, name, uid): (Resource, Option<String>, String, String),
    delay: Duration,
) {
    let (store, mut shutdown) = (store.clone(), shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {
                store.finish_termination(resource, namespace.as_deref(), &name, &uid);
            }
            _ = shutdown.changed() => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_namespaced_cluster_scoped_and_group_resources() {
        let pods = parse_route("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            pods,
            Route::Objects(Target {
                resource: Resource::Pods,
                namespace: Some("default".into()),
                name: Some("web".into()),
                subresource: Some("status".into()),
            })
        );
        let ns = parse_route("/api/v1/namespaces/default").unwrap();
        assert!(matches!(ns, Route::Objects(Target { resource: Resource::Namespaces, name: Some(_), .. })));
        let all = parse_route("/api/v1/pods").unwrap();
        assert!(matches!(
            all,
            Route::Objects(Target { resource: Resource::Pods, namespace: None, name: None, .. })
        ));
        let vmi = parse_route("/apis/kubevirt.io/v1/namespaces/a/virtualmachineinstances/v").unwrap();
        assert!(matches!(vmi, Route::Objects(Target { resource: Resource::VirtualMachineInstances, .. })));
        assert_eq!(parse_route("/api/v1"), Some(Route::ResourceList(String::new(), "v1".into())));
        assert_eq!(parse_route("/api/v1/pods/web"), None);
        assert_eq!(parse_route("/apis/apps/v1/deployments"), None);
    }
}
