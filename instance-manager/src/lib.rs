//! The instance manager: turns desired instances into Pods (plain and rich containers) and KubeVirt
//! VirtualMachineInstances in each IDC's cluster through the `kube` crate, and writes back what the
//! clusters report.
//!
//! - [`config`]: [`ManagerConfig`], the tunables, narrowed per IDC.
//! - [`cluster`]: [`ClusterClient`], a client for one IDC's cluster, from its address or its
//!   kubeconfig context.
//! - [`manifest`]: the objects an instance becomes, built from domain records (pure).
//! - [`kubevirt`]: the typed `kubevirt.io/v1` VirtualMachineInstance.
//! - [`observation`]: what a Pod's or VMI's status says about its instance (pure).
//! - [`link`]: the link to a cluster as a state machine advanced by probe results (pure).
//! - [`metrics`]: the typed `metrics.k8s.io/v1beta1` PodMetrics, and the instances' CPU samples
//!   read from them (pure).
//! - `calls`: the requests sent to a cluster (create, delete, look up, probe, read pod metrics),
//!   paced, timed out and retried.
//! - [`reconciler`]: [`IdcReconciler`], one per IDC: its creation loop, its pass loop and its
//!   metrics loop, driven by its [`work`] queue and by kube-runtime reflectors of the cluster's
//!   Pods and VMIs.
//! - [`work`]: [`WorkQueue`], the per-IDC wake-ups and hand-over of new instances that the store
//!   reports into (the binary plugs it into the store).
//!
//! Architecture invariant: this crate and edge-sim are the only ones that know Kubernetes objects or
//! build Kubernetes clients; the rest of the platform hands a [`ClusterClient`] to the reconciler.

#![warn(missing_docs)]

mod calls;
pub mod capacity;
pub mod cluster;
pub mod config;
pub mod kubevirt;
pub mod link;
pub mod manifest;
pub mod metrics;
pub mod observation;
pub mod reconciler;
pub mod work;

pub use cluster::ClusterClient;
pub use config::ManagerConfig;
pub use reconciler::{IdcReconciler, PassReport};
pub use work::WorkQueue;
