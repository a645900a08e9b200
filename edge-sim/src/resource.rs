//! The kinds of objects a simulated cluster serves, and what discovery says about each.

use std::fmt;

/// One resource type served by the simulator (the plural name in a URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `v1` namespaces (cluster-scoped).
    Namespaces,
    /// `v1` nodes (cluster-scoped).
    Nodes,
    /// `v1` pods (namespaced).
    Pods,
    /// `v1` services (namespaced).
    Services,
    /// `v1` secrets (namespaced): rich instances' ssh keys.
    Secrets,
    /// `kubevirt.io/v1` virtual machine instances (namespaced).
    VirtualMachineInstances,
    /// `admissionregistration.k8s.io/v1` validating webhook configurations (cluster-scoped): the
    /// webhooks deletes of pods, VMIs and namespaces are reviewed by (see [`crate::admission`]).
    ValidatingWebhookConfigurations,
}

impl Resource {
    /// Every resource, in the order discovery lists them.
    pub const ALL: [Resource; 7] = [
        Resource::Namespaces,
        Resource::Nodes,
        Resource::Pods,
        Resource::Services,
        Resource::Secrets,
        Resource::VirtualMachineInstances,
        Resource::ValidatingWebhookConfigurations,
    ];

    /// The plural name used in URLs (`pods`).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Nodes => "nodes",
            Resource::Pods => "pods",
            Resource::Services => "services",
            Resource::Secrets => "secrets",
            Resource::VirtualMachineInstances => "virtualmachineinstances",
            Resource::ValidatingWebhookConfigurations => "validatingwebhookconfigurations",
        }
    }

    /// The lowercase singular name (`pod`).
    pub fn singular(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespace",
            Resource::Nodes => "node",
            Resource::Pods => "pod",
            Resource::Services => "service",
            Resource::Secrets => "secret",
            Resource::VirtualMachineInstances => "virtualmachineinstance",
            Resource::ValidatingWebhookConfigurations => "validatingwebhookconfiguration",
        }
    }

    /// The object kind (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Nodes => "Node",
            Resource::Pods => "Pod",
            Resource::Services => "Service",
            Resource::Secrets => "Secret",
            Resource::VirtualMachineInstances => "VirtualMachineInstance",
            Resource::ValidatingWebhookConfigurations => "ValidatingWebhookConfiguration",
        }
    }

    /// The API group, empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Resource::VirtualMachineInstances => "kubevirt.io",
            Resource::ValidatingWebhookConfigurations => "admissionregistration.k8s.io",
            _ => "",
        }
    }

    /// The version served (every resource is served in one).
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// The `apiVersion` objects of this resource carry (`v1`, `kubevirt.io/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::VirtualMachineInstances => "kubevirt.io/v1",
            Resource::ValidatingWebhookConfigurations => "admissionregistration.k8s.io/v1",
            _ => "v1",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Resource::Pods | Resource::Services | Resource::Secrets | Resource::VirtualMachineInstances
        )
    }

    /// Short names kubectl accepts (`po`, `svc`, `vmi`).
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Namespaces => &["ns"],
            Resource::Nodes => &["no"],
            Resource::Pods => &["po"],
            Resource::Services => &["svc"],
            Resource::Secrets => &[],
            Resource::VirtualMachineInstances => &["vmi", "vmis"],
            Resource::ValidatingWebhookConfigurations => &[],
        }
    }

    /// Whether the `/status` subresource is served.
    pub fn has_status(self) -> bool {
        !matches!(self, Resource::Secrets | Resource::ValidatingWebhookConfigurations)
    }

    /// Whether a whole collection can be deleted at once (`DELETE …/pods?labelSelector=…`): every
    /// resource but namespaces, as in Kubernetes.
    pub fn deletes_collections(self) -> bool {
        self != Resource::Namespaces
    }

    /// Find a resource by its plural name within an API group.
    pub fn from_plural(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.group() == group && r.plural() == plural)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}
