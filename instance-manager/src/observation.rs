//! What the cluster's objects say about their instances, read without I/O: a Pod's or VMI's status
//! as an [`Observed`] state, where its ssh port is reached, and the trimming that keeps the
//! reflectors' copies small.

use std::sync::Arc;

use chrono::Utc;
use eci_store::instances::Observed;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Node, Pod, PodSpec, PodStatus, Service};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::kubevirt::VirtualMachineInstance;

/// Container states that will not get better by waiting.
const FATAL_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
];

/// What a Pod's status says about its instance; the ssh endpoint is filled in by the caller.
pub fn observe_pod(pod: &Pod) -> Observed {
    let Some(status) = &pod.status else { return Observed::Creating };
    match status.phase.as_deref() {
        Some("Running") if status.pod_ip.is_some() => {
            Observed::Running { ip: status.pod_ip.clone(), ssh: None }
        }
        Some("Failed") => Observed::Failed {
            reason: status
                .reason
                .clone()
                .or_else(|| status.message.clone())
                .unwrap_or_else(|| "the Pod failed".to_string()),
            ended_at: containers_finished_at(status),
        },
        Some("Succeeded") => Observed::Failed {
            reason: "its container exited".to_string(),
            ended_at: containers_finished_at(status),
        },
        _ => {
            let waiting = status
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .find(|w| w.reason.as_deref().is_some_and(|r| FATAL_WAITING_REASONS.contains(&r)));
            match waiting {
                Some(w) => Observed::Failed {
                    reason: match (&w.reason, &w.message) {
                        (Some(r), Some(m)) => format!("{r}: {m}"),
                        (Some(r), None) => r.clone(),
                        _ => "the container cannot start".to_string(),
                    },
                    ended_at: None,
                },
                None => Observed::Creating,
            }
        }
    }
}

/// When the last of a stopped Pod's containers finished, as the kubelet recorded it.
fn containers_finished_at(status: &PodStatus) -> Option<chrono::DateTime<Utc>> {
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .filter_map(|t| chrono::DateTime::from_timestamp_millis(t.0.as_millisecond()))
        .max()
}

/// What a VMI's status says about its instance.
pub fn observe_vmi(vmi: &VirtualMachineInstance) -> Observed {
    let Some(status) = &vmi.status else { return Observed::Creating };
    match status.phase.as_deref() {
        Some("Running") => {
            let ip = status.interfaces.iter().find_map(|i| i.ip_address.clone());
            if ip.is_some() { Observed::Running { ip, ssh: None } } else { Observed::Creating }
        }
        Some(phase @ ("Failed" | "Succeeded")) => Observed::Failed {
            reason: status.reason.clone().unwrap_or_else(|| "the virtual machine stopped".to_string()),
            ended_at: status
                .phase_transition_timestamps
                .iter()
                .filter(|t| t.phase.as_deref() == Some(phase))
                .filter_map(|t| t.phase_transition_timestamp)
                .max(),
        },
        _ => Observed::Creating,
    }
}

/// Why an object the cluster has not started yet waits, in the cluster's words: the scheduler's
/// `PodScheduled=False` condition (`Unschedulable: 0/2 nodes are available: 2 Insufficient cpu.`),
/// else a waiting container's reason. `None` when the cluster gives none.
pub(crate) fn pending_reason(workload: &Workload) -> Option<String> {
    let said = |reason: Option<&str>, message: Option<&str>| match (reason, message) {
        (Some(r), Some(m)) if !m.is_empty() => Some(format!("{r}: {m}")),
        (Some(r), _) => Some(r.to_string()),
        (None, Some(m)) => Some(m.to_string()),
        (None, None) => None,
    };
    match workload {
        Workload::Pod(pod) => {
            let status = pod.status.as_ref()?;
            let unscheduled = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .and_then(|c| said(c.reason.as_deref(), c.message.as_deref()));
            unscheduled.or_else(|| {
                status
                    .container_statuses
                    .iter()
                    .flatten()
                    .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                    .find_map(|w| said(w.reason.as_deref(), w.message.as_deref()))
            })
        }
        Workload::Vmi(vmi) => {
            let conditions = vmi.status.as_ref()?.extra.get("conditions")?.as_array()?;
            conditions.iter().filter(|c| c["status"] == "False").find_map(|c| {
                said(c["reason"].as_str(), c["message"].as_str()).filter(|_| c["type"] == "PodScheduled")
            })
        }
    }
}

/// Keeps of a watched Pod only what a pass reads (labels, deletion, runtime class, phase, addresses,
/// reasons, the scheduler's condition and waiting containers): the reflectors hold every Pod of the
/// IDC, and a full Pod is several kilobytes.
pub fn trim_pod(pod: &mut Pod) {
    trim_metadata(&mut pod.metadata);
    let runtime_class_name = pod.spec.as_mut().and_then(|s| s.runtime_class_name.take());
    pod.spec = Some(PodSpec { runtime_class_name, ..Default::default() });
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            host_ip: status.host_ip.take(),
            reason: status.reason.take(),
            message: status.message.take(),
            conditions: status
                .conditions
                .take()
                .map(|cs| cs.into_iter().filter(|c| c.type_ == "PodScheduled").collect()),
            container_statuses: status.container_statuses.take().map(|cs| {
                cs.into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name,
                        state: c.state.map(|s| ContainerState {
                            waiting: s.waiting,
                            terminated: s.terminated,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        };
    }
}

/// Keeps of a watched VMI only what a pass reads (see [`trim_pod`]).
pub fn trim_vmi(vmi: &mut VirtualMachineInstance) {
    trim_metadata(&mut vmi.metadata);
    vmi.spec = Default::default();
}

/// Name, namespace, labels and deletion are all a pass reads of an object's metadata.
fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

/// An instance's object as the reflectors hold it.
pub(crate) enum Workload {
    Pod(Arc<Pod>),
    Vmi(Arc<VirtualMachineInstance>),
}

/// Where an instance's ssh port is reached, as far as its object tells.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SshHost {
    /// A rich container's node, whose address the Pod's status carries.
    Address(String),
    /// The node a VM runs on, whose address has to be looked up.
    Node(String),
}

impl Workload {
    pub(crate) fn observe(&self) -> Observed {
        match self {
            Workload::Pod(pod) => observe_pod(pod),
            Workload::Vmi(vmi) => observe_vmi(vmi),
        }
    }

    /// The value of one of its labels.
    pub(crate) fn label(&self, key: &str) -> Option<String> {
        match self {
            Workload::Pod(pod) => pod.labels().get(key).cloned(),
            Workload::Vmi(vmi) => vmi.labels().get(key).cloned(),
        }
    }

    /// Deleted already and waiting out its grace period.
    pub(crate) fn terminating(&self) -> bool {
        match self {
            Workload::Pod(pod) => pod.metadata.deletion_timestamp.is_some(),
            Workload::Vmi(vmi) => vmi.metadata.deletion_timestamp.is_some(),
        }
    }

    pub(crate) fn namespace(&self) -> String {
        let ns = match self {
            Workload::Pod(pod) => pod.namespace(),
            Workload::Vmi(vmi) => vmi.namespace(),
        };
        ns.unwrap_or_else(|| "default".into())
    }

    /// The namespace of the instance's ssh Service and the host behind its NodePort; none for a
    /// plain container, which has no ssh, or for an object not yet placed on a node.
    pub(crate) fn ssh_host(&self) -> Option<(String, SshHost)> {
        match self {
            Workload::Pod(p) if p.spec.as_ref()?.runtime_class_name.is_some() => {
                Some((p.namespace()?, SshHost::Address(p.status.as_ref()?.host_ip.clone()?)))
            }
            Workload::Pod(_) => None,
            Workload::Vmi(v) => {
                let node = v.status.as_ref()?.node_name.clone()?;
                Some((v.namespace()?, SshHost::Node(node)))
            }
        }
    }
}

/// The address a node is reached at inside the IDC.
pub(crate) fn node_address(node: Node) -> Option<String> {
    node.status?.addresses?.into_iter().find(|a| a.type_ == "InternalIP").map(|a| a.address)
}

/// The NodePort an instance's ssh Service forwards to its port 22.
pub(crate) fn ssh_node_port(service: Service) -> Option<u16> {
    let port = service.spec?.ports?.into_iter().find(|p| p.port == 22)?.node_port?;
    u16::try_from(port).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a pod")
    }

    fn vmi(json: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(json).expect("a VMI")
    }

    fn at(text: &str) -> chrono::DateTime<Utc> {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn a_trimmed_pod_says_the_same_about_its_instance() {
        let pods = [
            serde_json::json!({"metadata": {"name": "a", "annotations": {"x": "y"}, "labels": {"eci.io/instance": "a"}},
                "spec": {"runtimeClassName": "kata", "containers": [{"name": "main", "image": "nginx"}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.0.2.1",
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
            serde_json::json!({"metadata": {"name": "b"}, "spec": {"containers": []},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "main", "image": "x", "imageID": "",
                    "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}}),
            serde_json::json!({"metadata": {"name": "c"}, "spec": {"containers": []},
                "status": {"phase": "Failed", "reason": "Evicted", "message": "node ran out of disk"}}),
        ];
        for pod in pods {
            let pod: Pod = serde_json::from_value(pod).expect("a pod");
            let mut trimmed = pod.clone();
            trim_pod(&mut trimmed);
            assert_eq!(observe_pod(&trimmed), observe_pod(&pod));
            assert_eq!(trimmed.labels(), pod.labels());
            assert_eq!(
                trimmed.spec.as_ref().and_then(|s| s.runtime_class_name.clone()),
                pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone())
            );
            assert!(trimmed.metadata.annotations.is_none());
            assert!(
                trimmed
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .all(|c| c.type_ == "PodScheduled")
            );
        }
    }

    #[test]
    fn a_waiting_object_says_why_in_the_clusters_words() {
        let unscheduled = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient cpu."}]}}));
        let mut trimmed = unscheduled.clone();
        trim_pod(&mut trimmed);
        let reason = Some("Unschedulable: 0/2 nodes are available: 2 Insufficient cpu.".to_string());
        assert_eq!(pending_reason(&Workload::Pod(Arc::new(trimmed))), reason, "kept through the trim");
        let pulling = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}}));
        assert_eq!(pending_reason(&Workload::Pod(Arc::new(pulling))).as_deref(), Some("ContainerCreating"));
        let silent = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Pending"}}));
        assert_eq!(pending_reason(&Workload::Pod(Arc::new(silent))), None);
        let vm = vmi(serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v"}, "spec": {"domain": {"cpu": {"cores": 1}, "resources": {}, "devices": {}}},
            "status": {"phase": "Scheduling",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient cpu."}]}}));
        assert_eq!(pending_reason(&Workload::Vmi(Arc::new(vm))), reason);
    }

    #[test]
    fn a_pod_runs_once_it_has_an_address_and_is_creating_until_then() {
        assert_eq!(observe_pod(&pod(serde_json::json!({"metadata": {"name": "a"}}))), Observed::Creating);
        let scheduled = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}}));
        assert_eq!(observe_pod(&scheduled), Observed::Creating);
        let running = pod(serde_json::json!({"metadata": {"name": "a"},
            "status": {"phase": "Running", "podIP": "10.0.0.7"}}));
        assert_eq!(observe_pod(&running), Observed::Running { ip: Some("10.0.0.7".into()), ssh: None });
    }

    #[test]
    fn a_stopped_pod_ends_its_instance_when_its_last_container_finished() {
        let evicted = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Failed",
            "message": "the node was low on memory",
            "containerStatuses": [
                {"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "finishedAt": "2025-03-01T10:00:00Z"}}},
                {"name": "side", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "finishedAt": "2025-03-01T10:00:02Z"}}}]}}));
        assert_eq!(
            observe_pod(&evicted),
            Observed::Failed {
                reason: "the node was low on memory".into(),
                ended_at: Some(at("2025-03-01T10:00:02Z"))
            }
        );
        let exited = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Succeeded"}}));
        assert_eq!(
            observe_pod(&exited),
            Observed::Failed { reason: "its container exited".into(), ended_at: None }
        );
    }

    #[test]
    fn a_container_waiting_for_a_passing_reason_is_still_creating() {
        let pulling = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "main", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}}));
        assert_eq!(observe_pod(&pulling), Observed::Creating);
        let bad_name = pod(serde_json::json!({"metadata": {"name": "a"}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "main", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "InvalidImageName"}}}]}}));
        assert_eq!(
            observe_pod(&bad_name),
            Observed::Failed { reason: "InvalidImageName".into(), ended_at: None }
        );
    }

    #[test]
    fn a_vmi_runs_with_its_guests_address_and_ends_at_its_phase_transition() {
        let booting = vmi(
            serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v"}, "spec": {"domain": {"cpu": {"cores": 1}, "resources": {}, "devices": {}}},
            "status": {"phase": "Running", "interfaces": [{"name": "default"}]}}),
        );
        assert_eq!(observe_vmi(&booting), Observed::Creating);
        let mut running = booting.clone();
        running.status.as_mut().unwrap().interfaces[0].ip_address = Some("10.1.0.3".into());
        assert_eq!(observe_vmi(&running), Observed::Running { ip: Some("10.1.0.3".into()), ssh: None });
        let stopped = vmi(
            serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v"}, "spec": {"domain": {"cpu": {"cores": 1}, "resources": {}, "devices": {}}},
            "status": {"phase": "Failed", "phaseTransitionTimestamps": [
                {"phase": "Running", "phaseTransitionTimestamp": "2025-03-01T09:00:00Z"},
                {"phase": "Failed", "phaseTransitionTimestamp": "2025-03-01T11:30:00Z"}]}}),
        );
        assert_eq!(
            observe_vmi(&stopped),
            Observed::Failed {
                reason: "the virtual machine stopped".into(),
                ended_at: Some(at("2025-03-01T11:30:00Z"))
            }
        );
    }

    #[test]
    fn ssh_reaches_a_rich_containers_node_or_looks_up_a_vms() {
        let rich = pod(serde_json::json!({"metadata": {"name": "r", "namespace": "t-1"},
            "spec": {"runtimeClassName": "kata", "containers": []},
            "status": {"phase": "Running", "hostIP": "192.0.2.4"}}));
        assert_eq!(
            Workload::Pod(Arc::new(rich)).ssh_host(),
            Some(("t-1".into(), SshHost::Address("192.0.2.4".into())))
        );
        let plain = pod(serde_json::json!({"metadata": {"name": "p", "namespace": "t-1"},
            "spec": {"containers": []}, "status": {"phase": "Running", "hostIP": "192.0.2.4"}}));
        assert_eq!(Workload::Pod(Arc::new(plain)).ssh_host(), None);
        let vm = vmi(serde_json::json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v", "namespace": "t-1"},
            "spec": {"domain": {"cpu": {"cores": 1}, "resources": {}, "devices": {}}},
            "status": {"phase": "Running", "nodeName": "node-3"}}));
        assert_eq!(
            Workload::Vmi(Arc::new(vm)).ssh_host(),
            Some(("t-1".into(), SshHost::Node("node-3".into())))
        );

        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "node-3"},
            "status": {"addresses": [{"type": "Hostname", "address": "node-3"},
                {"type": "InternalIP", "address": "198.51.100.3"}]}}))
        .expect("a node");
        assert_eq!(node_address(node).as_deref(), Some("198.51.100.3"));
        let service: Service = serde_json::from_value(serde_json::json!({"metadata": {"name": "v"},
            "spec": {"ports": [{"port": 80, "nodePort": 30080}, {"port": 22, "nodePort": 30022}]}}))
        .expect("a service");
        assert_eq!(ssh_node_port(service), Some(30022));
    }
}
