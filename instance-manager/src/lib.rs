//! The instance manager: turns desired instances into Pods (plain and rich containers) and KubeVirt
//! VirtualMachineInstances in each IDC's cluster through the `kube` crate.
//!
//! - [`manifest`]: the objects an instance becomes, built from domain records (pure).
//! - [`kubevirt`]: the typed `kubevirt.io/v1` VirtualMachineInstance.
//! - [`reconciler`]: one level-triggered reconciler per IDC, driven by the database and by
//!   kube-runtime reflectors of the cluster's Pods and VMIs.
//!
//! Architecture invariant: this crate and edge-sim are the only ones that know Kubernetes objects.

pub mod kubevirt;
pub mod manifest;
pub mod reconciler;
