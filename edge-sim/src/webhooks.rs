//! What a `ValidatingWebhookConfiguration` says, read as kube-apiserver reads it: checked and
//! defaulted when it is stored (so a broken one is refused at `kubectl apply`, not at the first
//! delete, and `kubectl get -o yaml` shows the defaults a real cluster shows), then matched against
//! a request by its rules, object selector and namespace selector.
//!
//! edge-sim sends `admission.k8s.io/v1` reviews only, so `admissionReviewVersions` must name `v1`;
//! CEL `matchConditions` are refused rather than ignored, since edge-sim cannot evaluate them.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::resource::Resource;
use crate::selector::LabelSelector;

/// What to do when a webhook cannot be called or gives no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Refuse the request (the default).
    Fail,
    /// Go on as if the webhook had allowed the request.
    Ignore,
}

/// Where a webhook is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `clientConfig.url`.
    Url {
        /// The URL, `https` with no query, fragment or user information.
        url: Url,
        /// `clientConfig.caBundle` decoded: the PEM certificates the server's is verified with, alone.
        ca_bundle: Option<Vec<u8>>,
    },
    /// `clientConfig.service`: a Service inside the cluster, which edge-sim has no network to reach.
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
    },
}

/// Which scope of resource a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `*` (the default): every resource.
    Any,
    /// Cluster-scoped resources, namespaces among them.
    Cluster,
    /// Namespaced resources.
    Namespaced,
}

/// One entry of `rules`: the operations on the resources it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `DELETE`, `CREATE`, …, or `*`.
    operations: Vec<String>,
    /// `""` (the core group), `kubevirt.io`, …, or `*`.
    api_groups: Vec<String>,
    /// `v1`, …, or `*`.
    api_versions: Vec<String>,
    /// `pods`, `*`, `pods/*`, `*/*`: a resource, optionally with a subresource after the slash.
    resources: Vec<String>,
    scope: Scope,
}

impl Rule {
    /// Whether the rule covers `operation` on the main resource (no subresource) `resource`, as
    /// kube-apiserver's rule matcher decides.
    fn covers(&self, operation: &str, resource: Resource) -> bool {
        let named = |list: &[String], wanted: &str| list.iter().any(|v| v == "*" || v == wanted);
        let resource_named = self.resources.iter().any(|entry| {
            let (main, sub) = entry.split_once('/').unwrap_or((entry, ""));
            (main == "*" || main == resource.plural()) && (sub == "*" || sub.is_empty())
        });
        let in_scope = match self.scope {
            Scope::Any => true,
            Scope::Cluster => !resource.namespaced(),
            Scope::Namespaced => resource.namespaced(),
        };
        named(&self.operations, operation)
            && named(&self.api_groups, resource.group())
            && named(&self.api_versions, resource.version())
            && resource_named
            && in_scope
    }
}

/// One validating webhook of a stored configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its name (`webhooks[].name`), which refusals and failures quote.
    pub name: String,
    /// Where it is called.
    pub endpoint: Endpoint,
    /// What it reviews; no rule, no review.
    rules: Vec<Rule>,
    /// What a failed call does to the request.
    pub failure_policy: FailurePolicy,
    /// The labels the object's namespace must have (for a Namespace, its own).
    namespace_selector: LabelSelector,
    /// The labels the object must have.
    object_selector: LabelSelector,
    /// How long a call may take, connecting included (`timeoutSeconds`, 1 to 30, 10 by default).
    pub timeout: Duration,
}

impl Webhook {
    /// Whether this webhook reviews `operation` on `object` of `resource` (the object as stored,
    /// whose labels the object selector reads) in `namespace` (the Namespace object itself, for a
    /// Namespace; its labels are what the namespace selector reads).
    pub fn matches(&self, operation: &str, resource: Resource, object: &Value, namespace: &Value) -> bool {
        self.rules.iter().any(|rule| rule.covers(operation, resource))
            && self.object_selector.matches(object)
            && self.namespace_selector.matches(namespace)
    }

    /// Reads `webhooks[i]`, refusing it with the field error kube-apiserver's validation gives.
    fn read(i: usize, webhook: &Value) -> Result<Webhook, String> {
        let at = |field: &str| format!("webhooks[{i}].{field}");
        let spec =
            WebhookSpec::deserialize(webhook).map_err(|e| format!("webhooks[{i}]: Invalid value: {e}"))?;
        let name =
            spec.name.filter(|n| !n.is_empty()).ok_or_else(|| format!("{}: Required value", at("name")))?;
        if name.split('.').count() < 3 || !valid_subdomain(&name) {
            return Err(format!(
                "{}: Invalid value: \"{name}\": should be a domain with at least three segments separated by dots",
                at("name")
            ));
        }
        let endpoint = endpoint(&at("clientConfig"), spec.client_config)?;
        let rules = spec
            .rules
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(j, rule)| rule.read(&at(&format!("rules[{j}]"))))
            .collect::<Result<_, _>>()?;
        let failure_policy = match spec.failure_policy.as_deref() {
            None | Some("Fail") => FailurePolicy::Fail,
            Some("Ignore") => FailurePolicy::Ignore,
            Some(other) => return Err(unsupported(&at("failurePolicy"), other, &["Fail", "Ignore"])),
        };
        if let Some(other) = spec.match_policy.as_deref().filter(|p| !["Equivalent", "Exact"].contains(p)) {
            return Err(unsupported(&at("matchPolicy"), other, &["Equivalent", "Exact"]));
        }
        match spec.side_effects.as_deref() {
            Some("None" | "NoneOnDryRun") => {}
            None => {
                return Err(format!(
                    "{}: Required value: must specify one of None, NoneOnDryRun",
                    at("sideEffects")
                ));
            }
            Some(other) => return Err(unsupported(&at("sideEffects"), other, &["None", "NoneOnDryRun"])),
        }
        match spec.admission_review_versions.as_deref() {
            None | Some([]) => {
                return Err(format!(
                    "{}: Required value: must specify one of v1, v1beta1",
                    at("admissionReviewVersions")
                ));
            }
            Some(versions) if !versions.iter().any(|v| v == "v1") => {
                return Err(format!(
                    "{}: Invalid value: {versions:?}: edge-sim sends admission.k8s.io/v1 reviews only, so this must include v1",
                    at("admissionReviewVersions")
                ));
            }
            Some(_) => {}
        }
        let timeout = match spec.timeout_seconds {
            None => 10,
            Some(seconds @ 1..=30) => seconds as u64,
            Some(other) => {
                return Err(format!(
                    "{}: Invalid value: {other}: the timeout value must be between 1 and 30 seconds",
                    at("timeoutSeconds")
                ));
            }
        };
        if spec.match_conditions.is_some_and(|conditions| !conditions.is_empty()) {
            return Err(format!(
                "{}: Forbidden: edge-sim does not evaluate CEL match conditions",
                at("matchConditions")
            ));
        }
        let selector = |field: &str, selector: Option<Map<String, Value>>| {
            LabelSelector::from_object(&selector.map_or(Value::Null, Value::Object))
                .map_err(|e| format!("{}.{e}", at(field)))
        };
        Ok(Webhook {
            name,
            endpoint,
            rules,
            failure_policy,
            namespace_selector: selector("namespaceSelector", spec.namespace_selector)?,
            object_selector: selector("objectSelector", spec.object_selector)?,
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// `webhooks[]` as written, before it is checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookSpec {
    name: Option<String>,
    client_config: Option<ClientConfigSpec>,
    rules: Option<Vec<RuleSpec>>,
    failure_policy: Option<String>,
    match_policy: Option<String>,
    namespace_selector: Option<Map<String, Value>>,
    object_selector: Option<Map<String, Value>>,
    side_effects: Option<String>,
    timeout_seconds: Option<i64>,
    admission_review_versions: Option<Vec<String>>,
    match_conditions: Option<Vec<Value>>,
}

/// `webhooks[].clientConfig` as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientConfigSpec {
    url: Option<String>,
    service: Option<ServiceSpec>,
    ca_bundle: Option<String>,
}

/// `webhooks[].clientConfig.service` as written (its path and port matter to no call edge-sim makes).
#[derive(Deserialize)]
struct ServiceSpec {
    namespace: Option<String>,
    name: Option<String>,
}

/// `webhooks[].rules[]` as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    operations: Option<Vec<String>>,
    api_groups: Option<Vec<String>>,
    api_versions: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    scope: Option<String>,
}

impl RuleSpec {
    fn read(self, at: &str) -> Result<Rule, String> {
        let required = |field: &str, list: Option<Vec<String>>| {
            let list =
                list.filter(|l| !l.is_empty()).ok_or_else(|| format!("{at}.{field}: Required value"))?;
            if list.len() > 1 && list.iter().any(|v| v == "*") {
                return Err(format!(
                    "{at}.{field}: Invalid value: {list:?}: if '*' is present, must not specify other values"
                ));
            }
            Ok(list)
        };
        const OPERATIONS: [&str; 5] = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
        let operations = required("operations", self.operations)?;
        if let Some((k, other)) =
            operations.iter().enumerate().find(|(_, op)| !OPERATIONS.contains(&op.as_str()))
        {
            return Err(unsupported(&format!("{at}.operations[{k}]"), other, &OPERATIONS));
        }
        let api_groups = required("apiGroups", self.api_groups)?;
        let api_versions = required("apiVersions", self.api_versions)?;
        let resources = required("resources", self.resources)?;
        for (field, list) in [("apiVersions", &api_versions), ("resources", &resources)] {
            if let Some(k) = list.iter().position(String::is_empty) {
                return Err(format!("{at}.{field}[{k}]: Required value: must not be empty"));
            }
        }
        let scope = match self.scope.as_deref() {
            None | Some("*") => Scope::Any,
            Some("Cluster") => Scope::Cluster,
            Some("Namespaced") => Scope::Namespaced,
            Some(other) => {
                return Err(unsupported(&format!("{at}.scope"), other, &["*", "Cluster", "Namespaced"]));
            }
        };
        Ok(Rule { operations, api_groups, api_versions, resources, scope })
    }
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> String {
    let supported: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    format!("{field}: Unsupported value: \"{value}\": supported values: {}", supported.join(", "))
}

fn valid_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !segment.starts_with('-')
                && !segment.ends_with('-')
        })
}

/// `clientConfig`: exactly one of a URL (checked as kube-apiserver checks webhook URLs) or a Service.
fn endpoint(at: &str, config: Option<ClientConfigSpec>) -> Result<Endpoint, String> {
    let exactly_one = || format!("{at}: Required value: exactly one of url or service is required");
    let config = config.ok_or_else(exactly_one)?;
    match (config.url, config.service) {
        (Some(url), None) => {
            let ca_bundle = match config.ca_bundle.filter(|b| !b.is_empty()) {
                Some(text) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|e| format!("{at}.caBundle: Invalid value: not base64: {e}"))?,
                ),
                None => None,
            };
            Ok(Endpoint::Url { url: webhook_url(&url).map_err(|e| format!("{at}.url: {e}"))?, ca_bundle })
        }
        (None, Some(service)) => {
            let part = |value: Option<String>, what: &str| {
                value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("{at}.service.{what}: Required value: service {what} is required"))
            };
            Ok(Endpoint::Service {
                namespace: part(service.namespace, "namespace")?,
                name: part(service.name, "name")?,
            })
        }
        _ => Err(exactly_one()),
    }
}

fn webhook_url(text: &str) -> Result<Url, String> {
    const FORM: &str = "; desired format: https://host[/path]";
    let url = Url::parse(text).map_err(|e| format!("Required value: url must be a valid URL: {e}{FORM}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "Invalid value: \"{}\": 'https' is the only allowed URL scheme{FORM}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("Invalid value: \"\": host must be specified{FORM}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "Invalid value: \"{}\": user information is not permitted in the URL",
            url.username()
        ));
    }
    if let Some(fragment) = url.fragment() {
        return Err(format!("Invalid value: \"{fragment}\": fragments are not permitted in the URL"));
    }
    if let Some(query) = url.query() {
        return Err(format!("Invalid value: \"{query}\": query parameters are not permitted in the URL"));
    }
    Ok(url)
}

/// Checks a configuration about to be stored and writes in the defaults kube-apiserver writes
/// (`failurePolicy: Fail`, `matchPolicy: Equivalent`, empty selectors, `timeoutSeconds: 10`,
/// `scope: "*"`), or refuses it as Invalid with the first field at fault.
pub fn prepare(config: &mut Value) -> Result<(), Error> {
    let name = config.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let invalid = |detail: String| Error::Invalid {
        kind: Resource::ValidatingWebhookConfigurations.kind(),
        name: name.clone(),
        detail,
    };
    let webhooks = match config.get_mut("webhooks") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(webhooks)) => webhooks,
        Some(other) => return Err(invalid(format!("webhooks: Invalid value: {other}: must be a list"))),
    };
    let mut names = HashSet::new();
    for (i, webhook) in webhooks.iter_mut().enumerate() {
        let read = Webhook::read(i, webhook).map_err(invalid)?;
        if !names.insert(read.name.clone()) {
            return Err(invalid(format!("webhooks[{i}].name: Duplicate value: \"{}\"", read.name)));
        }
        let defaults = [
            ("failurePolicy", json!("Fail")),
            ("matchPolicy", json!("Equivalent")),
            ("namespaceSelector", json!({})),
            ("objectSelector", json!({})),
            ("timeoutSeconds", json!(10)),
        ];
        for (field, value) in defaults {
            if webhook.get(field).is_none_or(Value::is_null) {
                webhook[field] = value;
            }
        }
        for rule in webhook.get_mut("rules").and_then(Value::as_array_mut).into_iter().flatten() {
            if rule.get("scope").is_none_or(Value::is_null) {
                rule["scope"] = json!("*");
            }
        }
    }
    Ok(())
}

/// The webhooks of a stored configuration, in their order (which [`prepare`] has checked).
pub fn of(config: &Value) -> Result<Vec<Webhook>, String> {
    let webhooks = config.get("webhooks").and_then(Value::as_array);
    webhooks.into_iter().flatten().enumerate().map(|(i, webhook)| Webhook::read(i, webhook)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(webhook: Value) -> Value {
        json!({"metadata": {"name": "guard"}, "webhooks": [webhook]})
    }

    fn webhook(rules: Value) -> Value {
        json!({
            "name": "guard.eci.io",
            "clientConfig": {"url": "https://127.0.0.1:9443/validate"},
            "rules": rules,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    }

    fn delete_pods() -> Value {
        json!([{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}])
    }

    fn refusal(webhook: Value) -> String {
        match prepare(&mut config(webhook)).unwrap_err() {
            Error::Invalid { detail, .. } => detail,
            other => panic!("not Invalid: {other:?}"),
        }
    }

    #[test]
    fn a_stored_configuration_gets_kube_apiservers_defaults() {
        let mut stored = config(webhook(delete_pods()));
        prepare(&mut stored).unwrap();
        let written = &stored["webhooks"][0];
        assert_eq!(written["failurePolicy"], "Fail");
        assert_eq!(written["matchPolicy"], "Equivalent");
        assert_eq!(written["timeoutSeconds"], 10);
        assert_eq!(written["namespaceSelector"], json!({}));
        assert_eq!(written["objectSelector"], json!({}));
        assert_eq!(written["rules"][0]["scope"], "*");
        let read = of(&stored).unwrap();
        assert_eq!(read[0].timeout, Duration::from_secs(10));
        assert_eq!(read[0].failure_policy, FailurePolicy::Fail);
    }

    #[test]
    fn a_broken_configuration_is_refused_with_the_field_at_fault() {
        let with = |field: &str, value: Value| {
            let mut w = webhook(delete_pods());
            w[field] = value;
            refusal(w)
        };
        assert_eq!(
            with("timeoutSeconds", json!(31)),
            "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds"
        );
        assert_eq!(
            with("name", json!("guard")),
            "webhooks[0].name: Invalid value: \"guard\": should be a domain with at least three segments separated by dots"
        );
        assert_eq!(
            with("failurePolicy", json!("Maybe")),
            "webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\""
        );
        assert_eq!(
            with("clientConfig", json!({"url": "http://127.0.0.1/validate"})),
            "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]"
        );
        assert_eq!(
            with("clientConfig", json!({})),
            "webhooks[0].clientConfig: Required value: exactly one of url or service is required"
        );
        assert!(with("sideEffects", Value::Null).starts_with("webhooks[0].sideEffects: Required value"));
        assert!(with("admissionReviewVersions", json!(["v1beta1"])).contains("must include v1"));
        assert!(with("matchConditions", json!([{"name": "a", "expression": "true"}])).contains("CEL"));
        assert_eq!(
            with("objectSelector", json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "webhooks[0].objectSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            refusal(webhook(
                json!([{"operations": ["REMOVE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}])
            )),
            "webhooks[0].rules[0].operations[0]: Unsupported value: \"REMOVE\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\""
        );
        let mut twice = config(webhook(delete_pods()));
        twice["webhooks"] = json!([webhook(delete_pods()), webhook(delete_pods())]);
        assert!(matches!(
            prepare(&mut twice),
            Err(Error::Invalid { detail, .. }) if detail == "webhooks[1].name: Duplicate value: \"guard.eci.io\""
        ));
    }

    fn only(rules: Value) -> Webhook {
        let mut stored = config(webhook(rules));
        prepare(&mut stored).unwrap();
        of(&stored).unwrap().remove(0)
    }

    #[test]
    fn rules_match_operation_group_version_resource_and_scope() {
        let (pod, ns) = (json!({"metadata": {"name": "p"}}), json!({"metadata": {"name": "default"}}));
        let pods = only(delete_pods());
        assert!(pods.matches("DELETE", Resource::Pods, &pod, &ns));
        assert!(!pods.matches("CREATE", Resource::Pods, &pod, &ns));
        assert!(!pods.matches("DELETE", Resource::VirtualMachineInstances, &pod, &ns));
        let everything = only(
            json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]),
        );
        for resource in [Resource::Pods, Resource::VirtualMachineInstances, Resource::Namespaces] {
            assert!(everything.matches("DELETE", resource, &pod, &ns), "{resource}");
        }
        let namespaced = only(
            json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "scope": "Namespaced"}]),
        );
        assert!(namespaced.matches("DELETE", Resource::VirtualMachineInstances, &pod, &ns));
        assert!(!namespaced.matches("DELETE", Resource::Namespaces, &ns, &ns));
        let cluster = only(
            json!([{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["namespaces"], "scope": "Cluster"}]),
        );
        assert!(cluster.matches("DELETE", Resource::Namespaces, &ns, &ns));
        assert!(!cluster.matches("DELETE", Resource::Pods, &pod, &ns));
        let kubevirt = only(
            json!([{"operations": ["DELETE"], "apiGroups": ["kubevirt.io"], "apiVersions": ["v1"], "resources": ["virtualmachineinstances"]}]),
        );
        assert!(kubevirt.matches("DELETE", Resource::VirtualMachineInstances, &pod, &ns));
        assert!(!kubevirt.matches("DELETE", Resource::Pods, &pod, &ns));
    }

    #[test]
    fn selectors_read_the_objects_and_the_namespaces_labels() {
        let mut w = webhook(delete_pods());
        w["objectSelector"] = json!({"matchLabels": {"eci.io/protected": "true"}});
        w["namespaceSelector"] = json!({"matchExpressions": [{"key": "tenant", "operator": "Exists"}]});
        let mut stored = config(w);
        prepare(&mut stored).unwrap();
        let hook = of(&stored).unwrap().remove(0);
        let protected = json!({"metadata": {"labels": {"eci.io/protected": "true"}}});
        let tenant = json!({"metadata": {"labels": {"tenant": "t-1"}}});
        assert!(hook.matches("DELETE", Resource::Pods, &protected, &tenant));
        assert!(!hook.matches("DELETE", Resource::Pods, &json!({"metadata": {}}), &tenant));
        assert!(!hook.matches("DELETE", Resource::Pods, &protected, &json!({"metadata": {}})));
    }
}
