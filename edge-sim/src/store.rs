//! The in-memory object store of one simulated cluster: objects, resourceVersions, and the change history
//! that watches resume from.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::durable::{DurableError, ObjectFile, Write};
use crate::error::{Error, Result};
use crate::patch::{merge_patch, strategic_merge_patch};
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many changes are kept for watches to resume from; older resourceVersions are "expired".
    pub history_limit: usize,
    /// How many changes a slow watcher may fall behind before its stream is ended (it then resumes).
    pub watch_buffer: usize,
    /// Whether deleting a pod with a grace period marks it terminating (`deletionTimestamp`) instead of
    /// removing it at once.
    pub honour_grace_period: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { history_limit: 10_000, watch_buffer: 4096, honour_grace_period: false }
    }
}

impl StoreConfig {
    /// Keep this many changes for watches to resume from.
    pub fn history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit.max(1);
        self
    }

    /// Mark pods deleted with a grace period as terminating instead of removing them at once.
    pub fn honour_grace_period(mut self, honour: bool) -> Self {
        self.honour_grace_period = honour;
        self
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created (or, in a synthetic initial event, exists).
    Added,
    /// The object changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as kept in the history and sent to watches.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change was committed at.
    pub resource_version: u64,
    /// What happened.
    pub event: EventType,
    /// The resource of the object.
    pub resource: Resource,
    /// The object after the change (for a deletion: as it was removed).
    pub object: Arc<Value>,
    /// The object before the change, so watches with selectors can tell "left the selection" apart.
    pub previous: Option<Arc<Value>>,
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status` (the object itself).
    Main,
    /// Only `status` (the `/status` subresource).
    Status,
}

/// Filters and paging of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only objects whose labels match.
    pub labels: LabelSelector,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
    /// At most this many items (0 or absent: all).
    pub limit: Option<usize>,
    /// Continue after the object a previous page ended with.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList {
    /// The objects, ordered by namespace then name.
    pub items: Vec<Value>,
    /// The store's resourceVersion when the list was taken.
    pub resource_version: u64,
    /// Present when more items follow; pass it back as `continue`.
    pub continue_token: Option<String>,
    /// How many matching items follow this page, when known.
    pub remaining: Option<u64>,
}

/// The outcome of a delete.
#[derive(Debug, Clone)]
pub enum Deletion {
    /// The object is gone; this is how it looked when removed.
    Removed(Value),
    /// The object is terminating (has a `deletionTimestamp`) and will be removed after its grace period.
    Terminating {
        /// The object with its deletion timestamp.
        object: Value,
        /// Seconds until it should be removed.
        grace_seconds: u64,
    },
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// With synthetic ADDED events for every existing object, then live changes.
    Now,
    /// With every change after this resourceVersion, then live changes.
    After(u64),
}

/// A watch's starting point: the events to send first, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    /// Events to send before the live ones (synthetic ADDED, or replayed history).
    pub initial: Vec<Arc<Change>>,
    /// Every change committed after the subscription was taken.
    pub live: broadcast::Receiver<Arc<Change>>,
    /// The store's resourceVersion when the subscription was taken.
    pub resource_version: u64,
}

/// (resource, namespace or "", name): ordered so that a list is a range scan.
type Key = (Resource, String, String);

#[derive(Debug)]
struct Inner {
    /// The last resourceVersion handed out.
    resource_version: u64,
    /// Every live object.
    objects: BTreeMap<Key, Value>,
    /// The most recent changes, oldest first.
    history: VecDeque<Arc<Change>>,
    /// The resourceVersion of the newest change dropped from `history` (0: none dropped).
    compacted: u64,
}

/// The range the API server hands NodePorts out of.
const NODE_PORTS: std::ops::RangeInclusive<u64> = 30000..=32767;

/// Gives every port of a new NodePort Service that has none the lowest free node port, as the API
/// server does; a taken or out-of-range port asked for explicitly is Invalid.
fn assign_node_ports(inner: &Inner, service: &mut Value) -> Result<()> {
    if service.pointer("/spec/type").and_then(Value::as_str) != Some("NodePort") {
        return Ok(());
    }
    let mut taken: std::collections::BTreeSet<u64> = inner
        .objects
        .iter()
        .filter(|((resource, _, _), _)| *resource == Resource::Services)
        .flat_map(|(_, s)| s.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .collect();
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(ports) = service.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return Ok(()) };
    for port in ports.iter_mut() {
        match port.get("nodePort").and_then(Value::as_u64) {
            Some(asked) if !NODE_PORTS.contains(&asked) || !taken.insert(asked) => {
                return Err(Error::Invalid {
                    kind: "Service",
                    name,
                    detail: format!(
                        "spec.ports.nodePort: Invalid value: {asked}: provided port is not in the valid range or is already allocated"
                    ),
                });
            }
            Some(_) => {}
            None => {
                let free = NODE_PORTS.clone().find(|p| !taken.contains(p)).ok_or_else(|| Error::Invalid {
                    kind: "Service",
                    name: name.clone(),
                    detail: "spec.ports.nodePort: the node port range is exhausted".into(),
                })?;
                taken.insert(free);
                port["nodePort"] = json!(free);
            }
        }
    }
    Ok(())
}

/// The object store of one simulated cluster. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    /// Its tunables.
    config: StoreConfig,
    /// Objects and history, changed together under one lock so every change gets the next resourceVersion.
    inner: Mutex<Inner>,
    /// Feeds live watches; sent under the lock so subscribers see changes in resourceVersion order.
    changes: broadcast::Sender<Arc<Change>>,
    /// Where every change is written before it is applied, under the cluster's name; `None` keeps
    /// the cluster in memory only.
    durable: Option<(Arc<ObjectFile>, String)>,
}

fn now_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata was just made an object")
}

/// The label every Namespace carries with its own name, as kube-apiserver sets it, so that webhooks'
/// and network policies' namespace selectors can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Gives a Namespace object its [`NAMESPACE_NAME_LABEL`], over any value a client wrote there.
fn label_namespace(namespace: &mut Value) {
    let name = meta_str(namespace, "name").unwrap_or_default().to_string();
    let meta = metadata_mut(namespace);
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta.insert("labels".into(), json!({}));
    }
    meta["labels"][NAMESPACE_NAME_LABEL] = json!(name);
}

/// What kube-apiserver does to every object of a kind it stores, on create and on every change of
/// the object itself: defaults and validation.
fn normalise(resource: Resource, object: &mut Value) -> Result<()> {
    match resource {
        Resource::Namespaces => label_namespace(object),
        Resource::ValidatingWebhookConfigurations => crate::webhooks::prepare(object)?,
        _ => {}
    }
    Ok(())
}

/// Whether `name` is a DNS-1123 subdomain, as Kubernetes requires of most object names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Five characters of the alphabet Kubernetes uses for generated name suffixes.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bits = uuid::Uuid::now_v7().as_u128();
    (0..5).map(|i| ALPHABET[((bits >> (i * 8)) % ALPHABET.len() as u128) as usize] as char).collect()
}

impl Store {
    /// An empty store (no namespaces either; `SimCluster` creates the usual ones).
    pub fn new(config: StoreConfig) -> Store {
        let (changes, _) = broadcast::channel(config.watch_buffer.max(16));
        let inner =
            Inner { resource_version: 0, objects: BTreeMap::new(), history: VecDeque::new(), compacted: 0 };
        Store { config, inner: Mutex::new(inner), changes, durable: None }
    }

    /// A store kept in `file` under `cluster`, with whatever that cluster had written there (nothing,
    /// the first time). Its change history starts empty at the kept resourceVersion, so watches from
    /// before are `Expired` and relist.
    pub fn open(config: StoreConfig, file: Arc<ObjectFile>, cluster: &str) -> Result<Store, DurableError> {
        let kept = file.load(cluster)?;
        let mut store = Store::new(config);
        let inner = store.inner.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.resource_version = kept.resource_version;
        inner.compacted = kept.resource_version;
        // Namespaces kept from before they carried their name label get it as they are read back, as
        // kube-apiserver defaults what it decodes from etcd; the file has it from their next change.
        inner.objects = kept
            .objects
            .into_iter()
            .map(|(resource, ns, name, mut object)| {
                if resource == Resource::Namespaces {
                    label_namespace(&mut object);
                }
                ((resource, ns, name), object)
            })
            .collect();
        store.durable = Some((file, cluster.to_string()));
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-made change: every change is one insert.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    fn key(resource: Resource, namespace: Option<&str>, name: &str) -> Key {
        let ns = if resource.namespaced() { namespace.unwrap_or_default() } else { "" };
        (resource, ns.to_string(), name.to_string())
    }

    /// Stamp the next resourceVersion, keep the change (when durable), apply it to the map, record it
    /// and tell the watches. A change that cannot be kept is not applied either.
    fn commit(
        &self,
        inner: &mut Inner,
        event: EventType,
        key: Key,
        mut object: Value,
        previous: Option<Value>,
    ) -> Result<Value> {
        let rv = inner.resource_version + 1;
        metadata_mut(&mut object).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let resource = key.0;
        if let Some((file, cluster)) = &self.durable {
            let write = Write {
                resource,
                namespace: &key.1,
                name: &key.2,
                object: (event != EventType::Deleted).then_some(&object),
            };
            file.write(cluster, rv, &write).map_err(|error| {
                warn!(%cluster, %resource, name = %key.2, error = %error, "a change could not be stored");
                Error::StorageFailed(error.to_string())
            })?;
        }
        inner.resource_version = rv;
        debug!(%resource, namespace = %key.1, name = %key.2, rv, event = event.as_str(), "commit");
        if event == EventType::Deleted {
            inner.objects.remove(&key);
        } else {
            inner.objects.insert(key, object.clone());
        }
        let change = Arc::new(Change {
            resource_version: rv,
            event,
            resource,
            object: Arc::new(object.clone()),
            previous: previous.map(Arc::new),
        });
        inner.history.push_back(change.clone());
        while inner.history.len() > self.config.history_limit {
            if let Some(dropped) = inner.history.pop_front() {
                inner.compacted = dropped.resource_version;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
        Ok(object)
    }

    fn require_namespace(inner: &Inner, resource: Resource, namespace: Option<&str>) -> Result<()> {
        if !resource.namespaced() {
            return Ok(());
        }
        let ns = namespace.unwrap_or_default();
        if inner.objects.contains_key(&(Resource::Namespaces, String::new(), ns.to_string())) {
            Ok(())
        } else {
            Err(Error::NotFound { resource: Resource::Namespaces, name: ns.to_string() })
        }
    }

    /// Create an object: fills in kind, apiVersion, namespace, uid, creationTimestamp, generation and a
    /// generated name; refuses a taken name (AlreadyExists) and a missing one (Invalid).
    pub fn create(&self, resource: Resource, namespace: Option<&str>, mut object: Value) -> Result<Value> {
        if !object.is_object() {
            return Err(Error::BadRequest("the request body is not a JSON object".into()));
        }
        match object.get("kind").and_then(Value::as_str) {
            Some(kind) if kind != resource.kind() => {
                return Err(Error::BadRequest(format!(
                    "the kind {kind} does not match the resource {resource} (kind {})",
                    resource.kind()
                )));
            }
            _ => {}
        }
        object["kind"] = json!(resource.kind());
        object["apiVersion"] = json!(resource.api_version());
        let meta = metadata_mut(&mut object);
        if resource.namespaced() {
            let ns = namespace.unwrap_or("default");
            match meta.get("namespace").and_then(Value::as_str) {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(Error::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request"
                            .into(),
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        for transient in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "uid"] {
            meta.remove(transient);
        }
        let ns = meta.get("namespace").and_then(Value::as_str).map(str::to_string);
        let given = meta.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
        let generate = meta.get("generateName").and_then(Value::as_str).map(str::to_string);

        let mut inner = self.lock();
        Self::require_namespace(&inner, resource, ns.as_deref())?;
        let name = match (given, generate) {
            (Some(name), _) => name,
            (None, Some(prefix)) if !prefix.is_empty() => loop {
                let candidate = format!("{prefix}{}", random_suffix());
                if !inner.objects.contains_key(&Self::key(resource, ns.as_deref(), &candidate)) {
                    break candidate;
                }
            },
            _ => {
                return Err(Error::Invalid {
                    kind: resource.kind(),
                    name: String::new(),
                    detail: "metadata.name: Required value: name or generateName is required".into(),
                });
            }
        };
        if !valid_name(&name) {
            return Err(Error::Invalid {
                kind: resource.kind(),
                name: name.clone(),
                detail: format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            });
        }
        let key = Self::key(resource, ns.as_deref(), &name);
        if inner.objects.contains_key(&key) {
            return Err(Error::AlreadyExists { resource, name });
        }
        let meta = metadata_mut(&mut object);
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(uuid::Uuid::now_v7().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_timestamp()));
        meta.insert("generation".into(), json!(1));
        normalise(resource, &mut object)?;
        match resource {
            Resource::Pods if object.pointer("/status/phase").is_none() => {
                object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            Resource::Namespaces if object.pointer("/status/phase").is_none() => {
                object["status"] = json!({"phase": "Active"});
            }
            Resource::Services => assign_node_ports(&inner, &mut object)?,
            _ => {}
        }
        self.commit(&mut inner, EventType::Added, key, object, None)
    }

    /// One object.
    pub fn get(&self, resource: Resource, namespace: Option<&str>, name: &str) -> Result<Value> {
        self.lock()
            .objects
            .get(&Self::key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| Error::NotFound { resource, name: name.to_string() })
    }

    /// The objects of a resource in one namespace (or all, with `None`), filtered and paged.
    pub fn list(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList> {
        let start = match options.continue_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => {
                let (ns, name) = token
                    .split_once('/')
                    .ok_or_else(|| Error::BadRequest(format!("invalid continue token {token:?}")))?;
                Bound::Excluded((resource, ns.to_string(), name.to_string()))
            }
            None => Bound::Included((resource, String::new(), String::new())),
        };
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let inner = self.lock();
        let mut matching = inner
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|((r, _, _), _)| *r == resource)
            .filter(|((_, ns, _), _)| namespace.is_none_or(|wanted| !resource.namespaced() || ns == wanted))
            .filter(|(_, object)| options.labels.matches(object) && options.fields.matches(object));
        let items: Vec<Value> = matching.by_ref().take(limit).map(|(_, object)| object.clone()).collect();
        let remaining = matching.count() as u64;
        let continue_token = (remaining > 0).then(|| {
            let last = items.last().expect("a full page is not empty");
            format!(
                "{}/{}",
                meta_str(last, "namespace").unwrap_or_default(),
                meta_str(last, "name").unwrap_or_default()
            )
        });
        Ok(ObjectList {
            items,
            resource_version: inner.resource_version,
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }

    fn check_version(resource: Resource, name: &str, body: &Value, current: &Value) -> Result<()> {
        match meta_str(body, "resourceVersion") {
            Some(rv) if !rv.is_empty() && Some(rv) != meta_str(current, "resourceVersion") => {
                Err(Error::Conflict { resource, name: name.to_string() })
            }
            _ => Ok(()),
        }
    }

    /// Build the stored object from the current one and a full replacement, keeping what the part may
    /// not change.
    fn merge_part(current: &Value, mut body: Value, part: Part) -> Value {
        match part {
            Part::Status => {
                let mut next = current.clone();
                next["status"] = body.get_mut("status").map(Value::take).unwrap_or(Value::Null);
                next
            }
            Part::Main => {
                let meta = metadata_mut(&mut body);
                for kept in
                    ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"]
                {
                    match current["metadata"].get(kept) {
                        Some(value) => meta.insert(kept.into(), value.clone()),
                        None => meta.remove(kept),
                    };
                }
                body["kind"] = current["kind"].clone();
                body["apiVersion"] = current["apiVersion"].clone();
                match current.get("status") {
                    Some(status) => body["status"] = status.clone(),
                    None => {
                        body.as_object_mut().map(|o| o.remove("status"));
                    }
                }
                if body.get("spec") != current.get("spec") {
                    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    body["metadata"]["generation"] = json!(generation);
                }
                body
            }
        }
    }

    /// Replace an object (PUT): `Part::Main` keeps the status, `Part::Status` changes only the status.
    /// A non-empty `metadata.resourceVersion` in the body must be the current one (else Conflict).
    pub fn update(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
    ) -> Result<Value> {
        if !body.is_object() {
            return Err(Error::BadRequest("the request body is not a JSON object".into()));
        }
        if let Some(given) = meta_str(&body, "name").filter(|n| *n != name) {
            return Err(Error::BadRequest(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let key = Self::key(resource, namespace, name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound { resource, name: name.to_string() })?;
        Self::check_version(resource, name, &body, &current)?;
        let mut next = Self::merge_part(&current, body, part);
        if part == Part::Main {
            normalise(resource, &mut next)?;
        }
        self.commit(&mut inner, EventType::Modified, key, next, Some(current))
    }

    /// Apply a JSON merge patch to an object (or only its status, with `Part::Status`).
    pub fn patch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        part: Part,
    ) -> Result<Value> {
        self.patch_by(resource, namespace, name, patch, part, merge_patch)
    }

    /// Apply a strategic merge patch to an object (or only its status, with `Part::Status`), as
    /// [`strategic_merge_patch`] reads one.
    pub fn strategic_patch(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        part: Part,
    ) -> Result<Value> {
        let apply = |target: &mut Value, patch: &Value| strategic_merge_patch(target, patch, resource);
        self.patch_by(resource, namespace, name, patch, part, apply)
    }

    fn patch_by(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        part: Part,
        apply: impl FnOnce(&mut Value, &Value),
    ) -> Result<Value> {
        if !patch.is_object() {
            return Err(Error::BadRequest("the patch is not a JSON object".into()));
        }
        let key = Self::key(resource, namespace, name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound { resource, name: name.to_string() })?;
        Self::check_version(resource, name, patch, &current)?;
        let mut patched = current.clone();
        apply(&mut patched, patch);
        let mut next = Self::merge_part(&current, patched, part);
        if part == Part::Main {
            normalise(resource, &mut next)?;
        }
        self.commit(&mut inner, EventType::Modified, key, next, Some(current))
    }

    /// Change an object in place with a closure (spec, status, anything): the seam the stage engine and
    /// tests use to act as kubelet or controller.
    pub fn modify(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value> {
        let key = Self::key(resource, namespace, name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound { resource, name: name.to_string() })?;
        let mut next = current.clone();
        change(&mut next);
        self.commit(&mut inner, EventType::Modified, key, next, Some(current))
    }

    /// Change an object in place only if `change` says it did (returns `true`): lets the stage engine
    /// check and act under one lock, and skip writes that would change nothing.
    pub fn modify_if(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value) -> bool,
    ) -> Result<Option<Value>> {
        let key = Self::key(resource, namespace, name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound { resource, name: name.to_string() })?;
        let mut next = current.clone();
        if !change(&mut next) {
            return Ok(None);
        }
        self.commit(&mut inner, EventType::Modified, key, next, Some(current)).map(Some)
    }

    /// Delete an object. A pod deleted with a grace period while `honour_grace_period` is on is marked
    /// terminating instead; deleting a namespace removes everything in it too.
    pub fn delete(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<Deletion> {
        let deletion = self.delete_if(resource, namespace, name, grace_period_seconds, None)?;
        Ok(deletion.expect("a delete without a precondition always happens"))
    }

    /// Delete an object as [`delete`](Self::delete) does, only if it is still at `resource_version`:
    /// `None` when it changed since, so that the webhooks that allowed deleting it decide again on
    /// what it is now.
    pub fn delete_unchanged(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        grace_period_seconds: Option<i64>,
        resource_version: &str,
    ) -> Result<Option<Deletion>> {
        self.delete_if(resource, namespace, name, grace_period_seconds, Some(resource_version))
    }

    fn delete_if(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        grace_period_seconds: Option<i64>,
        resource_version: Option<&str>,
    ) -> Result<Option<Deletion>> {
        let key = Self::key(resource, namespace, name);
        let mut inner = self.lock();
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound { resource, name: name.to_string() })?;
        if resource_version.is_some_and(|rv| meta_str(&current, "resourceVersion") != Some(rv)) {
            return Ok(None);
        }
        if resource == Resource::Pods && self.config.honour_grace_period {
            let grace = grace_period_seconds
                .or_else(|| current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                .unwrap_or(30);
            if grace > 0 {
                if current.pointer("/metadata/deletionTimestamp").is_some() {
                    return Ok(Some(Deletion::Terminating { object: current, grace_seconds: grace as u64 }));
                }
                let mut next = current.clone();
                let at = Utc::now() + chrono::Duration::seconds(grace);
                let meta = metadata_mut(&mut next);
                meta.insert("deletionTimestamp".into(), json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                let object = self.commit(&mut inner, EventType::Modified, key, next, Some(current))?;
                return Ok(Some(Deletion::Terminating { object, grace_seconds: grace as u64 }));
            }
        }
        if resource == Resource::Namespaces {
            let contained: Vec<(Key, Value)> = inner
                .objects
                .iter()
                .filter(|((r, ns, _), _)| r.namespaced() && ns == name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (key, object) in contained {
                self.commit(&mut inner, EventType::Deleted, key, object.clone(), Some(object))?;
            }
        }
        let removed = self.commit(&mut inner, EventType::Deleted, key, current.clone(), Some(current))?;
        Ok(Some(Deletion::Removed(removed)))
    }

    /// Remove a terminating object at the end of its grace period, if it is still the same object.
    pub fn finish_termination(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        name: &str,
        uid: &str,
    ) -> bool {
        let key = Self::key(resource, namespace, name);
        let mut inner = self.lock();
        match inner.objects.get(&key) {
            Some(current) if meta_str(current, "uid") == Some(uid) => {
                let current = current.clone();
                self.commit(&mut inner, EventType::Deleted, key, current.clone(), Some(current)).is_ok()
            }
            _ => false,
        }
    }

    /// Start a watch of one resource (in one namespace, or all): the events to send first and the live
    /// feed, taken together so that no change is missed or sent twice. Fails with `Expired` when the
    /// history no longer reaches back to the asked resourceVersion.
    pub fn subscribe(
        &self,
        resource: Resource,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<Subscription> {
        let inner = self.lock();
        let in_scope = |object: &Value| {
            namespace.is_none_or(|ns| !resource.namespaced() || meta_str(object, "namespace") == Some(ns))
        };
        let initial = match from {
            WatchFrom::Now => inner
                .objects
                .range((resource, String::new(), String::new())..)
                .take_while(|((r, _, _), _)| *r == resource)
                .filter(|(_, object)| in_scope(object))
                .map(|(_, object)| {
                    Arc::new(Change {
                        resource_version: meta_str(object, "resourceVersion")
                            .and_then(|rv| rv.parse().ok())
                            .unwrap_or(inner.resource_version),
                        event: EventType::Added,
                        resource,
                        object: Arc::new(object.clone()),
                        previous: None,
                    })
                })
                .collect(),
            WatchFrom::After(rv) if rv < inner.compacted => {
                return Err(Error::Expired { requested: rv, oldest: inner.compacted });
            }
            WatchFrom::After(rv) => inner
                .history
                .iter()
                .filter(|c| c.resource_version > rv && c.resource == resource && in_scope(&c.object))
                .cloned()
                .collect(),
        };
        Ok(Subscription { initial, live: self.changes.subscribe(), resource_version: inner.resource_version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let store = Store::new(StoreConfig::default());
        store.create(Resource::Namespaces, None, json!({"metadata": {"name": "default"}})).unwrap();
        store
    }

    fn pod(name: &str, app: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn node_port_services_get_distinct_node_ports_and_a_taken_one_is_refused() {
        let store = store();
        let service = |name: &str, node_port: Option<u64>| {
            let mut port = json!({"port": 22, "targetPort": 22});
            if let Some(p) = node_port {
                port["nodePort"] = json!(p);
            }
            json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [port]}})
        };
        let a = store.create(Resource::Services, Some("default"), service("a", None)).unwrap();
        let b = store.create(Resource::Services, Some("default"), service("b", None)).unwrap();
        assert_eq!(a.pointer("/spec/ports/0/nodePort"), Some(&json!(30000)));
        assert_eq!(b.pointer("/spec/ports/0/nodePort"), Some(&json!(30001)));
        assert!(matches!(
            store.create(Resource::Services, Some("default"), service("c", Some(30001))),
            Err(Error::Invalid { .. })
        ));
        let cluster_ip = json!({"metadata": {"name": "d"}, "spec": {"ports": [{"port": 80}]}});
        let d = store.create(Resource::Services, Some("default"), cluster_ip).unwrap();
        assert!(d.pointer("/spec/ports/0/nodePort").is_none());
    }

    fn rv(object: &Value) -> u64 {
        meta_str(object, "resourceVersion").unwrap().parse().unwrap()
    }

    #[test]
    fn a_created_pod_gets_identity_a_timestamp_and_a_pending_phase() {
        let store = store();
        let created = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        assert_eq!(created["kind"], "Pod");
        assert_eq!(created["apiVersion"], "v1");
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(meta_str(&created, "uid").is_some_and(|u| u.len() == 36));
        assert!(meta_str(&created, "creationTimestamp").is_some_and(|t| t.ends_with('Z')));
        assert_eq!(created["status"]["phase"], "Pending");
        assert_eq!(store.get(Resource::Pods, Some("default"), "a").unwrap(), created);
    }

    #[test]
    fn every_write_gets_a_higher_resource_version() {
        let store = store();
        let a = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        let b = store
            .patch(
                Resource::Pods,
                Some("default"),
                "a",
                &json!({"metadata": {"labels": {"k": "v"}}}),
                Part::Main,
            )
            .unwrap();
        let c = store
            .modify(Resource::Pods, Some("default"), "a", |p| p["status"]["phase"] = json!("Running"))
            .unwrap();
        let Deletion::Removed(d) = store.delete(Resource::Pods, Some("default"), "a", None).unwrap() else {
            panic!("removed at once by default")
        };
        let versions = [rv(&a), rv(&b), rv(&c), rv(&d)];
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(store.resource_version(), rv(&d));
    }

    #[test]
    fn a_taken_name_is_already_exists_and_a_missing_name_is_invalid() {
        let store = store();
        store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        let again = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap_err();
        assert_eq!(again.code_and_reason(), (409, "AlreadyExists"));
        let nameless = store.create(Resource::Pods, Some("default"), json!({"metadata": {}})).unwrap_err();
        assert_eq!(nameless.code_and_reason(), (422, "Invalid"));
        let elsewhere = store.create(Resource::Pods, Some("nowhere"), pod("a", "x")).unwrap_err();
        assert_eq!(elsewhere, Error::NotFound { resource: Resource::Namespaces, name: "nowhere".into() });
    }

    #[test]
    fn generate_name_makes_distinct_names_with_the_prefix() {
        let store = store();
        let body = json!({"metadata": {"generateName": "web-"}});
        let a = store.create(Resource::Pods, Some("default"), body.clone()).unwrap();
        let b = store.create(Resource::Pods, Some("default"), body).unwrap();
        let (a, b) = (meta_str(&a, "name").unwrap(), meta_str(&b, "name").unwrap());
        assert!(a.starts_with("web-") && a.len() == 9, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn lists_filter_by_selectors_and_page_with_continue_tokens() {
        let store = store();
        for i in 0..5 {
            store
                .create(
                    Resource::Pods,
                    Some("default"),
                    pod(&format!("p{i}"), if i % 2 == 0 { "x" } else { "y" }),
                )
                .unwrap();
        }
        let labels = LabelSelector::parse("app=x").unwrap();
        let xs = store.list(Resource::Pods, None, &ListOptions { labels, ..Default::default() }).unwrap();
        assert_eq!(xs.items.len(), 3);

        let mut names = Vec::new();
        let mut token = None;
        loop {
            let options = ListOptions { limit: Some(2), continue_token: token.take(), ..Default::default() };
            let page = store.list(Resource::Pods, Some("default"), &options).unwrap();
            names.extend(page.items.iter().map(|p| meta_str(p, "name").unwrap().to_string()));
            match page.continue_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    }

    #[test]
    fn a_main_update_keeps_the_status_and_a_status_update_keeps_the_spec() {
        let store = store();
        store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        let main = store
            .patch(
                Resource::Pods,
                Some("default"),
                "a",
                &json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}}),
                Part::Main,
            )
            .unwrap();
        assert_eq!(main["status"]["phase"], "Pending");
        assert_eq!(main["spec"]["nodeName"], "n1");
        assert_eq!(main["metadata"]["generation"], 2);
        let status = store
            .patch(
                Resource::Pods,
                Some("default"),
                "a",
                &json!({"spec": {"nodeName": "n2"}, "status": {"phase": "Running"}}),
                Part::Status,
            )
            .unwrap();
        assert_eq!(status["status"]["phase"], "Running");
        assert_eq!(status["spec"]["nodeName"], "n1");
    }

    #[test]
    fn an_update_with_a_stale_resource_version_is_a_conflict() {
        let store = store();
        let created = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        store
            .modify(Resource::Pods, Some("default"), "a", |p| p["metadata"]["labels"]["b"] = json!("c"))
            .unwrap();
        let err = store.update(Resource::Pods, Some("default"), "a", created, Part::Main).unwrap_err();
        assert_eq!(err.code_and_reason(), (409, "Conflict"));
    }

    #[test]
    fn a_watch_resumes_after_a_known_version_and_expires_beyond_the_history() {
        let store = Store::new(StoreConfig::default().history_limit(3));
        store.create(Resource::Namespaces, None, json!({"metadata": {"name": "default"}})).unwrap();
        let first = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        store.create(Resource::Pods, Some("default"), pod("b", "x")).unwrap();
        let resumed = store.subscribe(Resource::Pods, Some("default"), WatchFrom::After(rv(&first))).unwrap();
        assert_eq!(resumed.initial.len(), 1);
        assert_eq!(meta_str(&resumed.initial[0].object, "name"), Some("b"));
        for name in ["c", "d", "e"] {
            store.create(Resource::Pods, Some("default"), pod(name, "x")).unwrap();
        }
        let err = store.subscribe(Resource::Pods, Some("default"), WatchFrom::After(rv(&first))).unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err:?}");
        let now = store.subscribe(Resource::Pods, Some("default"), WatchFrom::Now).unwrap();
        assert_eq!(now.initial.len(), 5);
        assert!(now.initial.iter().all(|c| c.event == EventType::Added));
    }

    #[test]
    fn a_live_subscription_sees_changes_committed_after_it() {
        let store = store();
        let mut sub = store.subscribe(Resource::Pods, None, WatchFrom::Now).unwrap();
        store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        let change = sub.live.try_recv().unwrap();
        assert_eq!(change.event, EventType::Added);
        assert_eq!(change.resource_version, store.resource_version());
    }

    #[test]
    fn a_namespace_carries_its_name_label_whatever_a_client_writes() {
        let store = store();
        let team = store
            .create(Resource::Namespaces, None, json!({"metadata": {"name": "team", "labels": {"a": "b"}}}))
            .unwrap();
        assert_eq!(team["metadata"]["labels"], json!({"a": "b", NAMESPACE_NAME_LABEL: "team"}));
        let patch = json!({"metadata": {"labels": {NAMESPACE_NAME_LABEL: null}}});
        let patched = store.patch(Resource::Namespaces, None, "team", &patch, Part::Main).unwrap();
        assert_eq!(patched["metadata"]["labels"][NAMESPACE_NAME_LABEL], "team");
        let replaced =
            store.update(Resource::Namespaces, None, "team", json!({"metadata": {}}), Part::Main).unwrap();
        assert_eq!(replaced["metadata"]["labels"], json!({NAMESPACE_NAME_LABEL: "team"}));
    }

    #[test]
    fn a_namespace_kept_from_before_its_name_label_gets_it_when_read_back() {
        let file = ObjectFile::open(std::path::Path::new(":memory:")).unwrap();
        let old = json!({"kind": "Namespace", "metadata": {"name": "team", "resourceVersion": "1"}});
        let write = Write { resource: Resource::Namespaces, namespace: "", name: "team", object: Some(&old) };
        file.write("idc", 1, &write).unwrap();
        let store = Store::open(StoreConfig::default(), file, "idc").unwrap();
        let team = store.get(Resource::Namespaces, None, "team").unwrap();
        assert_eq!(team["metadata"]["labels"], json!({NAMESPACE_NAME_LABEL: "team"}));
    }

    #[test]
    fn a_delete_on_a_changed_object_does_not_happen() {
        let store = store();
        let created = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        let seen = meta_str(&created, "resourceVersion").unwrap().to_string();
        store
            .modify(Resource::Pods, Some("default"), "a", |p| p["status"]["phase"] = json!("Running"))
            .unwrap();
        let stale = store.delete_unchanged(Resource::Pods, Some("default"), "a", None, &seen).unwrap();
        assert!(stale.is_none());
        let now = store.get(Resource::Pods, Some("default"), "a").unwrap();
        let current = meta_str(&now, "resourceVersion").unwrap();
        let done = store.delete_unchanged(Resource::Pods, Some("default"), "a", None, current).unwrap();
        assert!(matches!(done, Some(Deletion::Removed(_))));
    }

    #[test]
    fn deleting_a_namespace_removes_what_is_in_it() {
        let store = store();
        store.create(Resource::Namespaces, None, json!({"metadata": {"name": "team"}})).unwrap();
        store.create(Resource::Pods, Some("team"), pod("a", "x")).unwrap();
        store.delete(Resource::Namespaces, None, "team", None).unwrap();
        assert!(store.get(Resource::Pods, Some("team"), "a").is_err());
    }

    #[test]
    fn a_pod_deleted_with_grace_terminates_first_when_grace_is_honoured() {
        let store = Store::new(StoreConfig::default().honour_grace_period(true));
        store.create(Resource::Namespaces, None, json!({"metadata": {"name": "default"}})).unwrap();
        let created = store.create(Resource::Pods, Some("default"), pod("a", "x")).unwrap();
        let Deletion::Terminating { object, grace_seconds } =
            store.delete(Resource::Pods, Some("default"), "a", Some(5)).unwrap()
        else {
            panic!("a graceful delete terminates first")
        };
        assert_eq!(grace_seconds, 5);
        assert!(object.pointer("/metadata/deletionTimestamp").is_some());
        assert!(store.finish_termination(
            Resource::Pods,
            Some("default"),
            "a",
            meta_str(&created, "uid").unwrap()
        ));
        assert!(store.get(Resource::Pods, Some("default"), "a").is_err());
        store.create(Resource::Pods, Some("default"), pod("b", "x")).unwrap();
        assert!(matches!(
            store.delete(Resource::Pods, Some("default"), "b", Some(0)).unwrap(),
            Deletion::Removed(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn resource_versions_only_grow_whatever_the_writes(ops in proptest::collection::vec(0u8..4, 1..40)) {
            let store = store();
            let mut last = store.resource_version();
            for (i, op) in ops.into_iter().enumerate() {
                let name = format!("p{}", i % 3);
                let result = match op {
                    0 => store.create(Resource::Pods, Some("default"), pod(&name, "x")).ok(),
                    1 => store.patch(Resource::Pods, Some("default"), &name, &json!({"metadata": {"labels": {"i": i.to_string()}}}), Part::Main).ok(),
                    2 => store.modify(Resource::Pods, Some("default"), &name, |p| p["status"]["phase"] = json!("Running")).ok(),
                    _ => store.delete(Resource::Pods, Some("default"), &name, None).ok().map(|d| match d {
                        Deletion::Removed(o) | Deletion::Terminating { object: o, .. } => o,
                    }),
                };
                if let Some(object) = result {
                    proptest::prop_assert!(rv(&object) > last);
                    last = rv(&object);
                }
                proptest::prop_assert_eq!(store.resource_version(), last);
            }
        }
    }
}
