//! Identifiers. Each is its own type so a batch id can never be passed where an instance id belongs.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The prefix every id of this kind starts with, so a pasted id says what it is.
            pub const PREFIX: &'static str = $prefix;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A customer account; every read and write is scoped to one.
    TenantId, "t-");
impl TenantId {
    /// The namespace the tenant's objects live in, in every IDC's cluster.
    pub fn namespace(&self) -> String {
        format!("eci-{}", self.0)
    }

    /// The tenant whose namespace `namespace` is, if it is one.
    pub fn from_namespace(namespace: &str) -> Option<TenantId> {
        namespace.strip_prefix("eci-").filter(|t| !t.is_empty()).map(|t| TenantId(t.to_string()))
    }
}

id_type!(
    /// A request for many instances made at once.
    BatchId, "b-");
/// The label of a cluster object (Pod, VMI, Service) that names the instance it belongs to: how a
/// reconciler's pass matches objects to instances, and how the admission webhook knows an object
/// is one of the platform's.
pub const LABEL_INSTANCE: &str = "eci.io/instance";

id_type!(
    /// One container, rich container or VM.
    InstanceId, "i-");
id_type!(
    /// Capacity held for one tenant ahead of its batches.
    ReservationId, "r-");
id_type!(
    /// An autoscaled group: instances kept at a count the platform computes.
    GroupId, "g-");
id_type!(
    /// An API key's public half, shown in listings; the secret is only ever stored hashed.
    KeyId, "k-");
