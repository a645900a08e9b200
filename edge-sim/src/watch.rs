//! Watch streams: newline-delimited JSON events over a chunked 200 response, fed by a store subscription.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::channel::{Channel, Sender};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use crate::error::Error;
use crate::fault::Fault;
use crate::resource::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, EventType, Store, WatchFrom};
use crate::table;

/// What one watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The resource watched.
    pub resource: Resource,
    /// The namespace watched (`None`: all).
    pub namespace: Option<String>,
    /// Where to start.
    pub from: WatchFrom,
    /// Only objects whose labels match.
    pub labels: LabelSelector,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
    /// Send BOOKMARK events every `bookmark_interval`.
    pub bookmarks: bool,
    /// How often bookmarks are sent.
    pub bookmark_interval: Duration,
    /// End the stream after this long (`timeoutSeconds`).
    pub timeout: Option<Duration>,
    /// Send each object as a one-row Table.
    pub table: bool,
    /// `sendInitialEvents=true`: end the initial events with an annotated BOOKMARK.
    pub send_initial_events: bool,
}

impl WatchRequest {
    fn selects(&self, object: &Value) -> bool {
        let in_namespace = self.namespace.as_deref().is_none_or(|ns| {
            !self.resource.namespaced()
                || object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        });
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this watch reports for a change, if any: an object that moves into the selection is
    /// ADDED, one that moves out is DELETED.
    pub fn translate(&self, change: &Change) -> Option<&'static str> {
        if change.resource != self.resource {
            return None;
        }
        let now = self.selects(&change.object);
        let before = change.previous.as_deref().is_some_and(|p| self.selects(p));
        match (change.event, before, now) {
            (EventType::Added, _, true) => Some("ADDED"),
            (EventType::Deleted, _, true) => Some("DELETED"),
            (EventType::Modified, true, true) => Some("MODIFIED"),
            (EventType::Modified, false, true) => Some("ADDED"),
            (EventType::Modified, true, false) => Some("DELETED"),
            _ => None,
        }
    }

    fn event_line(&self, kind: &str, object: &Value) -> Bytes {
        let object = if self.table {
            let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0");
            table::table(self.resource, std::slice::from_ref(object), rv.parse().unwrap_or(0), None)
        } else {
            object.clone()
        };
        line(kind, &object)
    }

    fn bookmark_line(&self, resource_version: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": resource_version.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.resource.kind(), "apiVersion": self.resource.api_version(), "metadata": metadata});
        line("BOOKMARK", &object)
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// A response body carrying one ERROR event with a 410 Expired Status (what makes clients relist).
pub fn expired_body(error: &Error) -> Body {
    Body::from(line("ERROR", &error.to_status()))
}

/// Start a watch: the body streams events until the client leaves, the timeout passes, the watcher
/// falls too far behind, or the cluster shuts down.
pub fn start(
    store: &Store,
    request: WatchRequest,
    shutdown: watch::Receiver<bool>,
    link: watch::Receiver<Fault>,
) -> Result<Body, Error> {
    let subscription = store.subscribe(request.resource, request.namespace.as_deref(), request.from)?;
    let (sender, body) = Channel::<Bytes, Error>::new(64);
    let initial_rv = subscription.resource_version;
    tokio::spawn(run(request, subscription.initial, subscription.live, initial_rv, sender, shutdown, link));
    Ok(Body::new(body))
}

async fn run(
    request: WatchRequest,
    initial: Vec<Arc<Change>>,
    mut live: broadcast::Receiver<Arc<Change>>,
    mut last_rv: u64,
    mut sender: Sender<Bytes, Error>,
    mut shutdown: watch::Receiver<bool>,
    mut link: watch::Receiver<Fault>,
) {
    let deadline = request.timeout.map(|t| Instant::now() + t);
    for change in &initial {
        if let Some(kind) = request.translate(change)
            && sender.send_data(request.event_line(kind, &change.object)).await.is_err()
        {
            return;
        }
    }
    if request.send_initial_events && sender.send_data(request.bookmark_line(last_rv, true)).await.is_err() {
        return;
    }
    let mut bookmarks =
        tokio::time::interval_at(Instant::now() + request.bookmark_interval, request.bookmark_interval);
    bookmarks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut link_followed = true;
    loop {
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = timeout => break,
            changed = link.changed(), if link_followed => {
                if changed.is_err() {
                    // Nobody can set a fault any more: the link stays as it is.
                    link_followed = false;
                    continue;
                }
                let fault = *link.borrow_and_update();
                match fault {
                    Fault::None | Fault::Slow(_) => continue,
                    // A black hole neither delivers nor closes: the stream stalls until the fault
                    // changes, then ends, and the client resumes from its last resourceVersion.
                    Fault::BlackHole => {
                        let _ = link.changed().await;
                        break;
                    }
                    Fault::Unreachable | Fault::Flapping(_) => break,
                }
            }
            received = live.recv() => match received {
                Ok(change) => {
                    last_rv = change.resource_version;
                    match request.translate(&change) {
                        Some(kind) => request.event_line(kind, &change.object),
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(missed, "watch fell behind; ending the stream so the client resumes");
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = bookmarks.tick(), if request.bookmarks => {
                // Everything committed up to now has been handed to `live` already: take it first,
                // so the bookmark's version really is complete.
                let mut pending = Vec::new();
                while let Ok(change) = live.try_recv() {
                    last_rv = change.resource_version;
                    if let Some(kind) = request.translate(&change) {
                        pending.push(request.event_line(kind, &change.object));
                    }
                }
                let mut failed = false;
                for line in pending {
                    failed |= sender.send_data(line).await.is_err();
                }
                if failed {
                    break;
                }
                request.bookmark_line(last_rv, false)
            }
        };
        if sender.send_data(line).await.is_err() {
            break;
        }
    }
    debug!(resource = %request.resource, last_rv, "watch ended");
}
