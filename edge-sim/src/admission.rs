//! Validating admission webhooks, called on a DELETE as kube-apiserver calls them: each webhook of
//! the stored `ValidatingWebhookConfiguration`s (in the order of the configurations' names, then of
//! their webhooks) whose rules, object selector and namespace selector match (see
//! [`crate::webhooks`]) is sent an `admission.k8s.io/v1` `AdmissionReview` over HTTPS, and the first
//! refusal refuses the request: nothing is deleted.
//!
//! Only the DELETE of a Pod, a VirtualMachineInstance or a Namespace is reviewed, which is all the
//! platform asks webhooks about; creates and updates are not. What the stage engine and the control
//! port do (a node evicting a workload) is no API request and is not reviewed, just as a kubelet's
//! eviction is no DELETE.
//!
//! Where edge-sim departs from kube-apiserver, and why:
//! - webhooks are called one after another, not side by side, so the refusal a client sees is
//!   always the first in that order;
//! - the server's certificate is verified against `clientConfig.caBundle` and nothing else: a
//!   webhook without one cannot be called (kube-apiserver would use its system roots, which edge-sim
//!   never trusts);
//! - a `clientConfig.service` cannot be reached, edge-sim having no cluster network: calling it is a
//!   failed call, which `failurePolicy` decides about;
//! - edge-sim authenticates nobody: `userInfo` is `system:anonymous` (group
//!   `system:unauthenticated`), or `token:` and the first 8 characters of the bearer token (group
//!   `system:authenticated`) when the request carries one, so a webhook can tell callers apart;
//! - a refusal is always 403 Forbidden, whatever code the webhook's status names.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, info, instrument, warn};

use crate::error::{Error, Result};
use crate::resource::Resource;
use crate::store::{ListOptions, Store};
use crate::webhooks::{self, Endpoint, FailurePolicy, Webhook};

/// At most this many HTTPS clients are kept, one per CA bundle; a cluster whose webhooks name more
/// bundles starts the cache afresh, which costs nothing but new handshakes.
const CLIENTS_KEPT: usize = 16;

/// Whether a DELETE of `resource` is reviewed by validating webhooks.
pub fn reviews_deletes_of(resource: Resource) -> bool {
    matches!(resource, Resource::Pods | Resource::VirtualMachineInstances | Resource::Namespaces)
}

/// Who made a request, as the review's `userInfo` tells the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// `system:anonymous`, or `token:` and the first 8 characters of the bearer token.
    username: String,
    /// `system:unauthenticated` or `system:authenticated`.
    group: &'static str,
}

impl UserInfo {
    /// The caller of a request with these headers (see the module's notes: edge-sim authenticates
    /// nobody, it only tells a bearer token's holder from an anonymous caller).
    pub fn from_headers(headers: &HeaderMap) -> UserInfo {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => UserInfo {
                username: format!("token:{}", token.chars().take(8).collect::<String>()),
                group: "system:authenticated",
            },
            None => UserInfo { username: "system:anonymous".into(), group: "system:unauthenticated" },
        }
    }

    fn to_json(&self) -> Value {
        json!({"username": self.username, "groups": [self.group]})
    }
}

/// What a webhook answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The request may go on.
    Allowed,
    /// Refused, with the explanation it gave, if any.
    Denied(Option<String>),
}

/// The validating webhook caller of one cluster. It holds the HTTPS clients, one per CA bundle, so
/// that the connections to a webhook are reused from one delete to the next.
#[derive(Debug, Default)]
pub struct Admission {
    /// The clients by the CA bundle they trust (its bytes, PEM).
    clients: Mutex<HashMap<Vec<u8>, reqwest::Client>>,
}

impl Admission {
    /// Asks every webhook that matches whether `object` of `resource` (as stored) may be deleted
    /// with `options` (a `DeleteOptions` body) by `user`: `Ok` when each allowed it (or failed
    /// under `failurePolicy: Ignore`), [`Error::Denied`] at the first refusal, and
    /// [`Error::WebhookFailed`] at the first failed call under `failurePolicy: Fail`.
    #[instrument(skip_all, fields(
        resource = %resource,
        namespace = object.pointer("/metadata/namespace").and_then(serde_json::Value::as_str),
        name = object.pointer("/metadata/name").and_then(serde_json::Value::as_str),
    ))]
    pub async fn review_delete(
        &self,
        store: &Store,
        resource: Resource,
        object: &Value,
        options: &Value,
        user: &UserInfo,
    ) -> Result<()> {
        let configurations =
            store.list(Resource::ValidatingWebhookConfigurations, None, &ListOptions::default())?.items;
        if configurations.is_empty() {
            return Ok(());
        }
        let namespace = match resource {
            Resource::Namespaces => object.clone(),
            // A namespaced object never outlives its namespace here (deleting one removes what is
            // in it), so a missing one only means no labels.
            _ => object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .and_then(|ns| store.get(Resource::Namespaces, None, ns).ok())
                .unwrap_or_else(|| json!({})),
        };
        for configuration in &configurations {
            let hooks = webhooks::of(configuration).map_err(|reason| Error::WebhookFailed {
                webhook: configuration.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").into(),
                reason,
            })?;
            for hook in hooks {
                if !hook.matches("DELETE", resource, object, &namespace) {
                    debug!(webhook = %hook.name, "admission webhook does not match");
                    continue;
                }
                match self.ask(&hook, resource, object, options, user).await {
                    Ok(Verdict::Allowed) => {}
                    Ok(Verdict::Denied(explanation)) => {
                        return Err(Error::Denied { webhook: hook.name, explanation });
                    }
                    Err(_) if hook.failure_policy == FailurePolicy::Ignore => {}
                    Err(reason) => return Err(Error::WebhookFailed { webhook: hook.name, reason }),
                }
            }
        }
        Ok(())
    }

    /// One call of one webhook with a fresh review, logged whatever comes of it.
    async fn ask(
        &self,
        hook: &Webhook,
        resource: Resource,
        object: &Value,
        options: &Value,
        user: &UserInfo,
    ) -> Result<Verdict, String> {
        let uid = uuid::Uuid::now_v7().to_string();
        let started = Instant::now();
        let outcome = self.call(hook, &uid, &review(&uid, resource, object, options, user)).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(verdict) => info!(
                webhook = %hook.name,
                %uid,
                allowed = *verdict == Verdict::Allowed,
                elapsed_ms,
                "admission webhook answered"
            ),
            Err(error) => warn!(
                webhook = %hook.name,
                %uid,
                %error,
                failure_policy = ?hook.failure_policy,
                elapsed_ms,
                "calling an admission webhook failed"
            ),
        }
        outcome
    }

    /// Sends `review` to the webhook and reads its verdict; `Err` says why no verdict came back, in
    /// the words kube-apiserver would use.
    async fn call(&self, hook: &Webhook, uid: &str, review: &Value) -> Result<Verdict, String> {
        let (url, ca_bundle) = match &hook.endpoint {
            Endpoint::Service { namespace, name } => {
                return Err(format!(
                    "failed to call webhook: clientConfig.service {namespace}/{name} cannot be reached: edge-sim has no cluster network and calls webhooks at clientConfig.url only"
                ));
            }
            Endpoint::Url { url, ca_bundle } => (url, ca_bundle),
        };
        let client = self.client(ca_bundle.as_deref())?;
        let mut url = url.clone();
        url.query_pairs_mut().append_pair("timeout", &format!("{}s", hook.timeout.as_secs()));
        let failed =
            |error: reqwest::Error| format!("failed to call webhook: Post \"{url}\": {}", cause(&error));
        let response =
            client.post(url.clone()).timeout(hook.timeout).json(review).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "failed to call webhook: the server responded with the status code {} but did not return more information",
                status.as_u16()
            ));
        }
        let body = response.bytes().await.map_err(failed)?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| format!("received invalid webhook response: {e}"))?;
        answer.verdict(uid).map_err(|e| format!("received invalid webhook response: {e}"))
    }

    /// The HTTPS client that trusts exactly the certificates of `ca_bundle`.
    fn client(&self, ca_bundle: Option<&[u8]>) -> Result<reqwest::Client, String> {
        let ca_bundle = ca_bundle.ok_or(
            "failed to call webhook: clientConfig.caBundle is empty, and edge-sim trusts no certificate authority but the one it names",
        )?;
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(ca_bundle) {
            return Ok(client.clone());
        }
        let unusable =
            |detail: String| format!("failed to call webhook: clientConfig.caBundle is unusable: {detail}");
        let roots = reqwest::Certificate::from_pem_bundle(ca_bundle).map_err(|e| unusable(cause(&e)))?;
        if roots.is_empty() {
            return Err(unusable("it holds no PEM certificate".into()));
        }
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .https_only(true)
            .no_proxy();
        let client = roots
            .into_iter()
            .fold(builder, |builder, root| builder.add_root_certificate(root))
            .build()
            .map_err(|e| unusable(cause(&e)))?;
        if clients.len() >= CLIENTS_KEPT {
            clients.clear();
        }
        clients.insert(ca_bundle.to_vec(), client.clone());
        Ok(client)
    }
}

/// What went wrong under a reqwest error, from its causes (its own words only repeat the URL), or
/// Go's words for a deadline, as kube-apiserver reports a webhook that answered too late.
fn cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "context deadline exceeded".into();
    }
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if causes.last().is_none_or(|last| !last.contains(&text)) {
            causes.push(text);
        }
        source = next.source();
    }
    if causes.is_empty() { error.to_string() } else { causes.join(": ") }
}

/// The `AdmissionReview` of the DELETE of `object`, as kube-apiserver writes it: the object as
/// stored is `oldObject`, and a Namespace's own name is the request's namespace (the namespace of
/// a request to `/api/v1/namespaces/{name}`).
fn review(uid: &str, resource: Resource, object: &Value, options: &Value, user: &UserInfo) -> Value {
    let kind = json!({"group": resource.group(), "version": resource.version(), "kind": resource.kind()});
    let gvr =
        json!({"group": resource.group(), "version": resource.version(), "resource": resource.plural()});
    let meta = |field: &str| object.pointer(&format!("/metadata/{field}")).and_then(Value::as_str);
    let mut options = options.clone();
    options["apiVersion"] = json!("meta.k8s.io/v1");
    options["kind"] = json!("DeleteOptions");
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": gvr,
        "requestKind": kind,
        "requestResource": gvr,
        "name": meta("name"),
        "operation": "DELETE",
        "userInfo": user.to_json(),
        "object": null,
        "oldObject": object,
        "dryRun": false,
        "options": options,
    });
    let namespace = if resource == Resource::Namespaces { meta("name") } else { meta("namespace") };
    if let Some(namespace) = namespace {
        request["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// A webhook's answer, as far as a validating review reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    response: Option<AnswerResponse>,
}

#[derive(Deserialize)]
struct AnswerResponse {
    #[serde(default)]
    uid: String,
    /// Absent reads as `false`, as in kube-apiserver (Go's zero value): a refusal.
    #[serde(default)]
    allowed: bool,
    status: Option<AnswerStatus>,
}

#[derive(Deserialize)]
struct AnswerStatus {
    message: Option<String>,
    reason: Option<String>,
}

impl Answer {
    /// The verdict, if this is the answer to review `uid`; otherwise kube-apiserver's complaint.
    fn verdict(self, uid: &str) -> Result<Verdict, String> {
        if self.api_version != "admission.k8s.io/v1" || self.kind != "AdmissionReview" {
            return Err(format!(
                "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
                self.api_version, self.kind
            ));
        }
        let response = self.response.ok_or("webhook response was absent")?;
        if response.uid != uid {
            return Err(format!("expected response.uid=\"{uid}\", got \"{}\"", response.uid));
        }
        if response.allowed {
            return Ok(Verdict::Allowed);
        }
        let status = response.status;
        let said = |text: Option<String>| text.filter(|t| !t.is_empty());
        let explanation = status.map(|s| (said(s.message), said(s.reason)));
        Ok(Verdict::Denied(explanation.and_then(|(message, reason)| message.or(reason))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn answer(body: Value) -> Result<Verdict, String> {
        serde_json::from_value::<Answer>(body).unwrap().verdict("u-1")
    }

    fn review_answer(response: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }

    #[test]
    fn an_answer_allows_or_denies_with_its_message_or_reason() {
        assert_eq!(answer(review_answer(json!({"uid": "u-1", "allowed": true}))), Ok(Verdict::Allowed));
        assert_eq!(
            answer(review_answer(
                json!({"uid": "u-1", "allowed": false, "status": {"message": "protected"}})
            )),
            Ok(Verdict::Denied(Some("protected".into())))
        );
        assert_eq!(
            answer(review_answer(json!({"uid": "u-1", "allowed": false, "status": {"reason": "Locked"}}))),
            Ok(Verdict::Denied(Some("Locked".into())))
        );
        assert_eq!(answer(review_answer(json!({"uid": "u-1"}))), Ok(Verdict::Denied(None)));
    }

    #[test]
    fn an_answer_to_another_review_or_of_another_kind_is_invalid() {
        assert_eq!(
            answer(review_answer(json!({"uid": "u-2", "allowed": true}))),
            Err("expected response.uid=\"u-1\", got \"u-2\"".into())
        );
        assert_eq!(
            answer(json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"})),
            Err("expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got admission.k8s.io/v1beta1, Kind=AdmissionReview".into())
        );
        assert_eq!(answer(review_answer(Value::Null)), Err("webhook response was absent".into()));
    }

    #[test]
    fn a_namespaces_review_names_it_as_its_own_namespace() {
        let ns = json!({"metadata": {"name": "team", "labels": {"kubernetes.io/metadata.name": "team"}}});
        let review =
            review("u", Resource::Namespaces, &ns, &json!({}), &UserInfo::from_headers(&HeaderMap::new()));
        assert_eq!(review["request"]["namespace"], "team");
        assert_eq!(
            review["request"]["resource"],
            json!({"group": "", "version": "v1", "resource": "namespaces"})
        );
        assert_eq!(review["request"]["userInfo"]["username"], "system:anonymous");
        assert_eq!(review["request"]["options"]["kind"], "DeleteOptions");
    }

    #[test]
    fn a_bearer_tokens_holder_is_named_by_its_first_eight_characters() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abcdefghijkl"));
        let user = UserInfo::from_headers(&headers);
        assert_eq!(user.to_json(), json!({"username": "token:abcdefgh", "groups": ["system:authenticated"]}));
    }
}
