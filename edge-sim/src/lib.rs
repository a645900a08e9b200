//! A simulated edge cluster that speaks the Kubernetes REST API (in the spirit of KWOK), so that real
//! clients (`kubectl`, the `kube` crate) can drive it over loopback HTTP. Many clusters can run in one
//! process, each on its own port, their objects in memory or kept in one SQLite file.
//!
//! Layout (one idea per file):
//! - [`cluster`]: [`SimCluster`] — start a store and its API server on a port, seed namespaces and nodes,
//!   shut down cleanly.
//! - [`clock`]: [`SimClock`] — where metrics read the time; injectable, so tests pick the moment.
//! - [`store`]: [`Store`] — objects as JSON keyed by (resource, namespace, name), one resourceVersion
//!   counter, the bounded change history watches resume from, subscriptions for live watches.
//! - [`resource`]: [`Resource`] — the kinds served (namespaces, nodes, pods, services, secrets, kubevirt VMIs,
//!   validating webhook configurations).
//! - [`selector`]: label and field selectors.
//! - [`patch`]: JSON merge patch and strategic merge patch.
//! - [`api`]: the axum router — path parsing, CRUD, list, delete, deletecollection, status subresource.
//! - [`webhooks`]: what a `ValidatingWebhookConfiguration` says — checked and defaulted when stored,
//!   matched against a request.
//! - [`admission`]: [`admission::Admission`] — calls the validating webhooks over HTTPS before a Pod,
//!   VMI or Namespace is deleted, as kube-apiserver does.
//! - [`watch`]: watch streams (newline-delimited JSON events, bookmarks, 410 Expired).
//! - [`metrics`]: `metrics.k8s.io/v1beta1` PodMetrics and NodeMetrics, derived from running pods.
//! - [`load`]: [`LoadCurve`], [`LoadCurves`] — the CPU Pods use over time, per label selector.
//! - [`table`]: server-side printing (`meta.k8s.io/v1` Table) for kubectl.
//! - [`discovery`]: `/version`, `/api`, `/apis`, APIResourceLists.
//! - [`openapi`]: the `/openapi/v3` stubs that let `kubectl create -f` and `kubectl apply -f` run.
//! - [`query`]: lenient query-string parsing.
//! - [`status`]: `Status` objects and JSON responses.
//! - [`engine`]: [`engine::StageEngine`] — scheduler and kubelet stand-in: binds pending pods to nodes
//!   that fit, or marks them Unschedulable; runs bound pods after a boot delay; evicts on request.
//! - [`quantity`]: Kubernetes quantities (`500m`, `128Mi`) as integers.
//! - [`node`]: [`NodeSpec`] — pre-created nodes with allocatable cpu, memory and pods.
//! - [`fault`]: [`Fault`] — fault injection (unreachable, black hole, slow, flapping) per cluster.
//! - [`control`]: [`ControlServer`] — the control port of many clusters: set a cluster's fault and load
//!   curves, evict a workload as its node would.
//! - [`durable`]: [`ObjectFile`] — where clusters keep their objects beyond the process (SQLite).
//! - [`error`]: the one error type, mapped to a `Status` reason and code.
//!
//! **Invariant:** every object and every list carries a non-empty `metadata.resourceVersion`, and every
//! change gets a higher one than the last (kube's watcher relists in a tight loop otherwise).

#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod control;
pub mod discovery;
pub mod durable;
pub mod engine;
pub mod error;
pub mod fault;
pub mod load;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod patch;
pub mod quantity;
pub mod query;
pub mod resource;
pub mod selector;
pub mod status;
pub mod store;
pub mod table;
pub mod watch;
pub mod webhooks;

pub use clock::SimClock;
pub use cluster::{ClusterError, SimCluster, SimConfig};
pub use control::ControlServer;
pub use durable::ObjectFile;
pub use engine::EngineConfig;
pub use error::{Error, Result};
pub use fault::Fault;
pub use load::{LoadCurve, LoadCurves, LoadSetting};
pub use node::NodeSpec;
pub use resource::Resource;
pub use store::{Store, StoreConfig};
