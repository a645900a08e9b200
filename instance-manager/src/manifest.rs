//! The Kubernetes objects an instance becomes, built from domain records. Pure: no I/O, so every
//! shape is tested here and the reconciler only sends what these functions return.

use std::collections::BTreeMap;

use eci_core::{BatchRequest, Instance, InstanceId, Resources, Runtime};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, Pod, PodSpec, ResourceRequirements,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::kubevirt::{
    CloudInitNoCloud, ContainerDisk, Devices, Disk, DiskTarget, Domain, DomainCpu, DomainResources,
    VirtualMachineInstance, VmiSpec, Volume as VmiVolume,
};

// Every object the platform makes carries these labels, so the reconciler can find its own and
// nothing else.

pub use eci_core::ids::LABEL_INSTANCE;
/// The batch of the object's instance, so operators can select a batch's objects.
pub const LABEL_BATCH: &str = "eci.io/batch";
/// The tenant of the object's instance, so operators can select a tenant's objects.
pub const LABEL_TENANT: &str = "eci.io/tenant";
/// The well-known label naming what manages an object; the reflectors watch only objects with it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The platform's value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "eci";

/// The name of the GPU resource in requests and limits.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// How objects are built; per-IDC values (such as the Kata runtime class) override the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestConfig {
    /// The platform's rich base image: systemd as PID 1, sshd, chrony (see `images/rich-base/`).
    pub rich_image: String,
    /// `runtimeClassName` of rich containers.
    pub rich_runtime_class: String,
    /// The user ssh logs in as.
    pub ssh_user: String,
    /// The host ssh endpoints name: the IDC's ssh ingress, or (when unset) the node running the
    /// instance.
    pub ssh_ingress_host: Option<String>,
    /// How long a released instance's processes get to shut down (SIGTERM, or systemd's
    /// SIGRTMIN+3, to SIGKILL); its instance stays `stopping`, and billed, until then.
    pub stop_grace_seconds: i64,
}

impl Default for ManifestConfig {
    fn default() -> Self {
        ManifestConfig {
            rich_image: "eci/rich-base:1".into(),
            rich_runtime_class: "kata".into(),
            ssh_user: "root".into(),
            ssh_ingress_host: None,
            stop_grace_seconds: 30,
        }
    }
}

/// Instance ids are valid DNS labels, so they name their objects directly; a retried create then
/// meets `AlreadyExists` instead of making a second Pod.
pub fn object_name(instance: &InstanceId) -> String {
    instance.0.clone()
}

/// The name of the Secret holding an instance's ssh keys.
pub fn ssh_secret_name(instance: &InstanceId) -> String {
    format!("{}-ssh", instance.0)
}

/// The platform's labels first; the customer's batch labels beside them, never overriding them.
pub fn labels(instance: &Instance, request: &BatchRequest) -> BTreeMap<String, String> {
    let mut labels = request.labels.clone();
    labels.insert(LABEL_INSTANCE.into(), instance.id.0.clone());
    labels.insert(LABEL_BATCH.into(), instance.batch_id.0.clone());
    labels.insert(LABEL_TENANT.into(), instance.tenant_id.0.clone());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

fn meta(name: String, instance: &Instance, request: &BatchRequest) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(instance.tenant_id.namespace()),
        labels: Some(labels(instance, request)),
        ..ObjectMeta::default()
    }
}

/// Requests equal limits: instances are sold as guaranteed capacity (the Guaranteed QoS class).
fn requirements(spec: &Resources) -> ResourceRequirements {
    let mut amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(format!("{}m", spec.cpu.0))),
        ("memory".to_string(), Quantity(format!("{}Mi", spec.memory.0))),
    ]);
    if spec.gpu > 0 {
        amounts.insert(GPU_RESOURCE.into(), Quantity(spec.gpu.to_string()));
    }
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
}

fn env(request: &BatchRequest) -> Option<Vec<EnvVar>> {
    let vars: Vec<EnvVar> = request
        .workload
        .env
        .iter()
        .map(|(name, value)| EnvVar { name: name.clone(), value: Some(value.clone()), ..Default::default() })
        .collect();
    (!vars.is_empty()).then_some(vars)
}

fn ports(ports: impl IntoIterator<Item = u16>) -> Option<Vec<ContainerPort>> {
    let ports: Vec<ContainerPort> = ports
        .into_iter()
        .map(|p| ContainerPort { container_port: i32::from(p), ..Default::default() })
        .collect();
    (!ports.is_empty()).then_some(ports)
}

fn non_empty(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The Pod of a `container` or `rich` instance.
pub fn pod(instance: &Instance, request: &BatchRequest, config: &ManifestConfig) -> Pod {
    let workload = &request.workload;
    let mut container = Container {
        name: "main".into(),
        resources: Some(requirements(&instance.spec)),
        env: env(request),
        ..Default::default()
    };
    let mut spec = PodSpec {
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(config.stop_grace_seconds),
        ..Default::default()
    };
    match instance.runtime {
        Runtime::Rich => {
            // systemd as PID 1 needs its own /run and the right to mount; under Kata the container
            // is a VM of its own, so that right stays inside it.
            container.image = Some(config.rich_image.clone());
            container.ports = ports(std::iter::once(22).chain(workload.ports.iter().copied()));
            container.security_context = Some(SecurityContext {
                capabilities: Some(Capabilities { add: Some(vec!["SYS_ADMIN".into()]), drop: None }),
                ..Default::default()
            });
            container.volume_mounts = Some(vec![
                VolumeMount { name: "run".into(), mount_path: "/run".into(), ..Default::default() },
                VolumeMount { name: "run-lock".into(), mount_path: "/run/lock".into(), ..Default::default() },
                VolumeMount {
                    name: "ssh-keys".into(),
                    mount_path: format!("{}/.ssh/authorized_keys", home(&config.ssh_user)),
                    sub_path: Some("authorized_keys".into()),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]);
            let memory = || EmptyDirVolumeSource { medium: Some("Memory".into()), ..Default::default() };
            spec.volumes = Some(vec![
                Volume { name: "run".into(), empty_dir: Some(memory()), ..Default::default() },
                Volume { name: "run-lock".into(), empty_dir: Some(memory()), ..Default::default() },
                Volume {
                    name: "ssh-keys".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(ssh_secret_name(&instance.id)),
                        default_mode: Some(0o600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]);
            spec.runtime_class_name = Some(config.rich_runtime_class.clone());
        }
        Runtime::Container | Runtime::Vm => {
            container.image = Some(workload.image.clone());
            container.command = non_empty(&workload.command);
            container.args = non_empty(&workload.args);
            container.ports = ports(workload.ports.iter().copied());
        }
    }
    spec.containers = vec![container];
    Pod { metadata: meta(object_name(&instance.id), instance, request), spec: Some(spec), status: None }
}

fn home(user: &str) -> String {
    if user == "root" { "/root".into() } else { format!("/home/{user}") }
}

/// The customer's ssh public keys, one per line, as sshd reads them.
fn authorized_keys(request: &BatchRequest) -> String {
    let mut text = request.workload.ssh_keys.join("\n");
    text.push('\n');
    text
}

/// The Secret a rich container mounts as its `authorized_keys`.
pub fn ssh_secret(instance: &Instance, request: &BatchRequest) -> Secret {
    Secret {
        metadata: meta(ssh_secret_name(&instance.id), instance, request),
        data: Some(BTreeMap::from([(
            "authorized_keys".to_string(),
            ByteString(authorized_keys(request).into_bytes()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The NodePort Service that becomes a rich container's or VM's ssh endpoint.
pub fn ssh_service(instance: &Instance, request: &BatchRequest) -> Service {
    Service {
        metadata: meta(object_name(&instance.id), instance, request),
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            selector: Some(BTreeMap::from([(LABEL_INSTANCE.to_string(), instance.id.0.clone())])),
            ports: Some(vec![ServicePort {
                name: Some("ssh".into()),
                port: 22,
                target_port: Some(IntOrString::Int(22)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// cloud-init user data that installs the customer's keys. Keys are written as JSON strings, which
/// YAML reads unchanged whatever their comments contain.
fn cloud_init(request: &BatchRequest, user: &str) -> String {
    let mut text = String::from("#cloud-config\n");
    if user == "root" {
        text.push_str("disable_root: false\n");
    }
    text.push_str("ssh_authorized_keys:\n");
    for key in &request.workload.ssh_keys {
        text.push_str(&format!("  - {}\n", serde_json::Value::String(key.clone())));
    }
    text
}

/// The VirtualMachineInstance of a `vm` instance: the image is its container disk.
pub fn vmi(instance: &Instance, request: &BatchRequest, config: &ManifestConfig) -> VirtualMachineInstance {
    let spec = &instance.spec;
    let mut requests = BTreeMap::from([("memory".to_string(), format!("{}Mi", spec.memory.0))]);
    if spec.gpu > 0 {
        requests.insert(GPU_RESOURCE.into(), spec.gpu.to_string());
    }
    let disk = |name: &str| Disk { name: name.into(), disk: DiskTarget { bus: "virtio".into() } };
    VirtualMachineInstance::new(
        meta(object_name(&instance.id), instance, request),
        VmiSpec {
            domain: Domain {
                // A VM gets whole cores: a fraction of a vCPU is rounded up, never down.
                cpu: DomainCpu { cores: u32::try_from(spec.cpu.0.div_ceil(1000)).unwrap_or(u32::MAX) },
                resources: DomainResources { requests, limits: BTreeMap::new() },
                devices: Devices { disks: vec![disk("rootdisk"), disk("cloudinit")] },
                extra: BTreeMap::new(),
            },
            volumes: vec![
                VmiVolume {
                    name: "rootdisk".into(),
                    container_disk: Some(ContainerDisk { image: request.workload.image.clone() }),
                    cloud_init_no_cloud: None,
                },
                VmiVolume {
                    name: "cloudinit".into(),
                    container_disk: None,
                    cloud_init_no_cloud: Some(CloudInitNoCloud {
                        user_data: cloud_init(request, &config.ssh_user),
                    }),
                },
            ],
            termination_grace_period_seconds: Some(config.stop_grace_seconds),
            extra: BTreeMap::new(),
        },
    )
}

/// The name of the platform's `ValidatingWebhookConfiguration` in every member cluster.
pub const WEBHOOK_CONFIGURATION: &str = "eci-deletion-guard";

/// How long an API server waits for the webhook before its `failurePolicy` decides: long enough
/// for a control plane a continent away, short enough that a `kubectl delete` fails fast.
pub const WEBHOOK_TIMEOUT_SECONDS: i32 = 5;

/// The namespaces no webhook of the platform is ever asked about, so that a control plane that is
/// down never stands in the way of the cluster's own components.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The `ValidatingWebhookConfiguration` that makes a member cluster ask the platform before it
/// deletes a live instance's Pod or VMI, or a namespace of the platform's: `url` is the webhook's
/// address for this cluster's IDC (`https://…/admission/idcs/<idc>`), `ca_pem` the certificate
/// authority its serving certificate is verified with.
///
/// `failurePolicy: Fail`: with the platform unreachable, the guarded objects cannot be deleted;
/// nothing else is affected, since the object selectors match only the platform's objects and
/// only DELETE is reviewed.
pub fn webhook_configuration(url: &str, ca_pem: &str) -> ValidatingWebhookConfiguration {
    let not_system = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(SYSTEM_NAMESPACES.iter().map(|n| n.to_string()).collect()),
        }]),
        match_labels: None,
    };
    let deleting = |groups: &str, versions: &str, resources: &str, scope: &str| RuleWithOperations {
        api_groups: Some(vec![groups.into()]),
        api_versions: Some(vec![versions.into()]),
        operations: Some(vec!["DELETE".into()]),
        resources: Some(vec![resources.into()]),
        scope: Some(scope.into()),
    };
    let webhook =
        |name: &str, object_selector: LabelSelector, rules: Vec<RuleWithOperations>| ValidatingWebhook {
            name: name.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                url: Some(url.into()),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(not_system.clone()),
            object_selector: Some(object_selector),
            rules: Some(rules),
            side_effects: "None".into(),
            timeout_seconds: Some(WEBHOOK_TIMEOUT_SECONDS),
            match_conditions: None,
        };
    let instances = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: LABEL_INSTANCE.into(),
            operator: "Exists".into(),
            values: None,
        }]),
        match_labels: None,
    };
    let managed = LabelSelector {
        match_labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])),
        match_expressions: None,
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_CONFIGURATION.into()),
            labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook(
                "instances.deletion-guard.eci.io",
                instances,
                vec![
                    deleting("", "v1", "pods", "Namespaced"),
                    deleting("kubevirt.io", "*", "virtualmachineinstances", "Namespaced"),
                ],
            ),
            webhook(
                "namespaces.deletion-guard.eci.io",
                managed,
                vec![deleting("", "v1", "namespaces", "Cluster")],
            ),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use eci_core::{
        Area, BatchId, Carrier, IdcId, InstanceState, MiB, MilliCpu, PlacementSpec, TenantId, Workload,
    };

    fn request(runtime: Runtime) -> BatchRequest {
        BatchRequest {
            count: 1,
            spec: Resources::new(MilliCpu(2500), MiB(4096), 0),
            runtime,
            workload: Workload {
                image: "nginx:1.27".into(),
                command: vec!["nginx".into()],
                args: vec!["-g".into(), "daemon off;".into()],
                env: BTreeMap::from([("MODE".into(), "edge".into())]),
                ports: vec![80],
                ssh_keys: vec!["ssh-ed25519 AAAAC3Nz ops: on-call #1".into()],
            },
            placement: PlacementSpec::default(),
            reservation_id: None,
            ttl_seconds: None,
            create_timeout_seconds: None,
            labels: BTreeMap::from([("app".into(), "cdn".into())]),
        }
    }

    fn instance(runtime: Runtime) -> Instance {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        Instance {
            id: InstanceId("i-0001".into()),
            batch_id: BatchId("b-0001".into()),
            tenant_id: TenantId("t-0001".into()),
            state: InstanceState::Pending,
            spec: Resources::new(MilliCpu(2500), MiB(4096), 0),
            runtime,
            idc: IdcId("idc-shenzhen-1".into()),
            area: Area::new("south-china", "guangdong", "shenzhen"),
            carrier: Carrier::Telecom,
            reservation_id: None,
            labels: Default::default(),
            ip: None,
            ssh: None,
            failure_reason: None,
            created_at: t,
            updated_at: t,
            started_at: None,
            ended_at: None,
        }
    }

    #[test]
    fn a_container_instance_is_a_guaranteed_pod_labelled_as_ours() {
        let pod =
            pod(&instance(Runtime::Container), &request(Runtime::Container), &ManifestConfig::default());
        let json = serde_json::to_value(&pod).unwrap();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Pod");
        assert_eq!(json["metadata"]["name"], "i-0001");
        assert_eq!(json["metadata"]["namespace"], "eci-t-0001");
        let labels = &json["metadata"]["labels"];
        assert_eq!(labels[LABEL_INSTANCE], "i-0001");
        assert_eq!(labels[LABEL_BATCH], "b-0001");
        assert_eq!(labels[LABEL_TENANT], "t-0001");
        assert_eq!(labels["app"], "cdn");
        let c = &json["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.27");
        assert_eq!(c["command"], serde_json::json!(["nginx"]));
        assert_eq!(c["args"], serde_json::json!(["-g", "daemon off;"]));
        assert_eq!(c["env"], serde_json::json!([{"name": "MODE", "value": "edge"}]));
        assert_eq!(c["ports"], serde_json::json!([{"containerPort": 80}]));
        assert_eq!(c["resources"]["requests"], serde_json::json!({"cpu": "2500m", "memory": "4096Mi"}));
        assert_eq!(c["resources"]["requests"], c["resources"]["limits"]);
        assert!(json["spec"].get("runtimeClassName").is_none());
    }

    #[test]
    fn customer_labels_never_override_the_platforms() {
        let mut req = request(Runtime::Container);
        req.labels.insert(LABEL_INSTANCE.into(), "someone-else".into());
        let labels = labels(&instance(Runtime::Container), &req);
        assert_eq!(labels[LABEL_INSTANCE], "i-0001");
    }

    #[test]
    fn a_rich_instance_runs_the_base_image_under_kata_with_the_keys_mounted() {
        let config = ManifestConfig::default();
        let req = request(Runtime::Rich);
        let inst = instance(Runtime::Rich);
        let json = serde_json::to_value(pod(&inst, &req, &config)).unwrap();
        assert_eq!(json["spec"]["runtimeClassName"], "kata");
        let c = &json["spec"]["containers"][0];
        assert_eq!(c["image"], config.rich_image);
        assert!(c.get("command").is_none(), "systemd must stay PID 1");
        assert_eq!(c["ports"][0]["containerPort"], 22);
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["mountPath"] == "/run"));
        assert!(mounts.iter().any(|m| m["mountPath"] == "/root/.ssh/authorized_keys"));
        let volumes = json["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "i-0001-ssh"));

        let secret = ssh_secret(&inst, &req);
        let keys = String::from_utf8(secret.data.unwrap()["authorized_keys"].0.clone()).unwrap();
        assert_eq!(keys, "ssh-ed25519 AAAAC3Nz ops: on-call #1\n");

        let service = serde_json::to_value(ssh_service(&inst, &req)).unwrap();
        assert_eq!(service["spec"]["type"], "NodePort");
        assert_eq!(service["spec"]["selector"][LABEL_INSTANCE], "i-0001");
        assert_eq!(service["spec"]["ports"][0]["port"], 22);
    }

    #[test]
    fn a_vm_instance_is_a_kubevirt_vmi_with_whole_cores_and_cloud_init_keys() {
        let vmi = vmi(&instance(Runtime::Vm), &request(Runtime::Vm), &ManifestConfig::default());
        let json = serde_json::to_value(&vmi).unwrap();
        assert_eq!(json["apiVersion"], "kubevirt.io/v1");
        assert_eq!(json["kind"], "VirtualMachineInstance");
        assert_eq!(json["metadata"]["namespace"], "eci-t-0001");
        assert_eq!(json["spec"]["domain"]["cpu"]["cores"], 3, "2.5 vCPU rounds up to 3 cores");
        assert_eq!(json["spec"]["domain"]["resources"]["requests"]["memory"], "4096Mi");
        assert_eq!(json["spec"]["volumes"][0]["containerDisk"]["image"], "nginx:1.27");
        let user_data = json["spec"]["volumes"][1]["cloudInitNoCloud"]["userData"].as_str().unwrap();
        assert!(user_data.starts_with("#cloud-config\n"));
        assert!(user_data.contains("  - \"ssh-ed25519 AAAAC3Nz ops: on-call #1\"\n"), "{user_data}");
        let back: VirtualMachineInstance = serde_json::from_value(json).unwrap();
        assert_eq!(back, vmi);
    }
}
