//! A typed `kubevirt.io/v1` VirtualMachineInstance: the part of KubeVirt's schema the platform writes
//! and reads. Unknown fields of a live object are kept in `extra` so an update never drops them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A KubeVirt virtual machine instance: one running VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstance {
    /// Always `kubevirt.io/v1`; servers refuse objects without it.
    pub api_version: String,
    /// Always `VirtualMachineInstance`.
    pub kind: String,
    /// Name, namespace and the platform's labels.
    pub metadata: ObjectMeta,
    /// The VM the platform asks for.
    pub spec: VmiSpec,
    /// What KubeVirt reports; absent until it has looked at the VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VmiStatus>,
}

/// The VM an instance asks for: its domain, its disks' sources and its shutdown grace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiSpec {
    /// The virtual hardware.
    pub domain: Domain,
    /// Where the domain's disks come from, matched to them by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// How long a released VM gets to shut down before it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Fields the platform does not model, kept as the server sent them.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The virtual hardware of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    /// The guest's vCPUs.
    pub cpu: DomainCpu,
    /// What the VM requests of its node: the instance's memory (and GPUs).
    pub resources: DomainResources,
    /// The guest's disks.
    pub devices: Devices,
    /// Fields the platform does not model, kept as the server sent them.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The guest's CPU topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainCpu {
    /// Whole vCPUs; KubeVirt has no milli-CPU cores.
    pub cores: u32,
}

/// What a VM requests of its node, and at most uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainResources {
    /// Quantity strings keyed by resource name (`memory`, `cpu`).
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    /// Quantity strings keyed by resource name: the most the VM may use. The platform sets none;
    /// a VMI read back may carry them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// The guest's devices; only disks are modelled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    /// The guest's disks: its root disk and its cloud-init data.
    #[serde(default)]
    pub disks: Vec<Disk>,
}

/// One disk of the guest, backed by the volume of the same name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// The volume behind the disk.
    pub name: String,
    /// How the guest sees the disk.
    pub disk: DiskTarget,
}

/// How a disk is attached to the guest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskTarget {
    /// The bus the guest sees the disk on (`virtio`).
    pub bus: String,
}

/// A VMI volume: the boot disk from a container image, or cloud-init data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// The disk the volume backs.
    pub name: String,
    /// The boot disk, from the instance's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_disk: Option<ContainerDisk>,
    /// The cloud-init data that puts the tenant's ssh keys in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitNoCloud>,
}

/// A disk image shipped as a container image, which is how `vm` instances name their image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerDisk {
    /// The image reference.
    pub image: String,
}

/// cloud-init's NoCloud data source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitNoCloud {
    /// The `#cloud-config` document.
    pub user_data: String,
}

/// What KubeVirt reports about a VMI; `phase` is Pending, Scheduling, Scheduled, Running, Succeeded,
/// Failed or Unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiStatus {
    /// Where the VMI is in its life; decides the instance's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The guest's network interfaces; the first address is the instance's IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VmiInterface>,
    /// The node the VM runs on, whose address its ssh endpoint names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Why a VMI failed, for the instance's failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the VMI entered each phase; the moment it stopped is the one billing needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_transition_timestamps: Vec<VmiPhaseTransition>,
    /// Fields the platform does not model, kept as the server sent them.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The moment a VMI entered a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiPhaseTransition {
    /// The phase entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When, as KubeVirt recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_transition_timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

/// One of the guest's network interfaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiInterface {
    /// The guest's address on it, once its agent reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The interface's name in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl VirtualMachineInstance {
    /// A VMI with its `apiVersion` and `kind` set, which the server requires and serde cannot infer.
    pub fn new(metadata: ObjectMeta, spec: VmiSpec) -> Self {
        VirtualMachineInstance {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachineInstance".into(),
            metadata,
            spec,
            status: None,
        }
    }
}

impl kube::Resource for VirtualMachineInstance {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "VirtualMachineInstance".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "kubevirt.io".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "virtualmachineinstances".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
