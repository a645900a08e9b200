//! The requests the reconciler sends to one IDC's cluster, named for what they do. Each is paced
//! at the IDC's rate (`governor`) and times out; those named `…_with_retries` are tried again after
//! jittered exponential delays (`backon`) when they fail for a passing reason. Creating takes
//! `AlreadyExists`, and deleting `NotFound`, as done, so every call can be repeated without harm.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use eci_core::{InstanceId, Runtime};
use eci_store::instances::Desired;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster::ClusterClient;
use crate::config::ManagerConfig;
use crate::kubevirt::VirtualMachineInstance;
use crate::link::ProbeResult;
use crate::manifest::{self, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, ManifestConfig};
use crate::metrics::PodMetrics;
use crate::observation::Workload;

/// A request the cluster did not carry out, after the tries a passing failure gets.
// Each variant names the step that failed, as kube-runtime's errors do (`InitialListFailed`).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Creating one of an instance's objects (or its namespace) failed.
    #[error("the cluster refused to {action} `{name}`")]
    CreateFailed {
        /// What was being done, as the instance's failure reason names it (`create pod`).
        action: &'static str,
        /// The object's name.
        name: String,
        /// The cluster's answer, or why there was none.
        #[source]
        source: kube::Error,
    },
    /// Deleting one of an instance's objects failed.
    #[error("the cluster refused to delete `{name}`")]
    DeleteFailed {
        /// The object's name.
        name: String,
        /// The cluster's answer, or why there was none.
        #[source]
        source: kube::Error,
    },
    /// Listing the instances' PodMetrics failed (a cluster without a metrics API answers 404).
    #[error("the cluster did not give its pod metrics")]
    ReadMetricsFailed {
        /// The cluster's answer, or why there was none.
        #[source]
        source: kube::Error,
    },
}

impl CallError {
    /// The cluster will never take this object as it is (it is invalid, or a field is not allowed):
    /// trying again cannot help, so its instance fails with the cluster's message.
    pub fn refusal(&self) -> Option<String> {
        match self {
            CallError::CreateFailed { source: kube::Error::Api(s), action, .. }
                if s.code == 400 || s.code == 422 =>
            {
                Some(format!("the cluster refused to {action}: {}", s.message))
            }
            _ => None,
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Failures that may pass if the same request is sent again shortly: the server was busy or
/// unavailable, or the connection broke. Anything the server refused on its merits is not.
fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// One IDC's cluster as the reconciler calls it.
pub(crate) struct ClusterCalls {
    client: kube::Client,
    probe: kube::Client,
    /// Paces every request to the cluster but the probe, which must not queue behind a batch.
    limiter: DefaultDirectRateLimiter,
    request_timeout: Duration,
    request_retries: usize,
    retry_delay: Duration,
}

impl ClusterCalls {
    pub(crate) fn new(client: &ClusterClient, config: &ManagerConfig) -> ClusterCalls {
        let per_second = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.request_burst).unwrap_or(per_second);
        ClusterCalls {
            client: client.kube().clone(),
            probe: client.probe().clone(),
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            request_timeout: config.request_timeout,
            request_retries: config.request_retries,
            retry_delay: config.retry_delay,
        }
    }

    /// Asks the API server its version, once and unpaced, giving up after `timeout`: whether the
    /// link works at all.
    pub(crate) async fn probe(&self, timeout: Duration) -> ProbeResult {
        match tokio::time::timeout(timeout, self.probe.apiserver_version()).await {
            Ok(Ok(_)) => ProbeResult::Answered,
            _ => ProbeResult::Missed,
        }
    }

    /// Sends one request at the IDC's pace, failing it after `request_timeout`.
    async fn send<T>(&self, request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
        self.limiter.until_ready().await;
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(answer) => answer,
            Err(elapsed) => Err(kube::Error::Service(Box::new(elapsed))),
        }
    }

    /// Sends one request at the IDC's pace, trying passing failures again with exponential,
    /// jittered delays.
    async fn send_with_retries<T, F, Fut>(&self, mut request: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let paced = || self.send(request());
        paced
            .retry(
                ExponentialBuilder::new()
                    .with_min_delay(self.retry_delay)
                    .with_max_times(self.request_retries)
                    .with_jitter(),
            )
            .when(is_transient)
            .await
    }

    /// Creates an object, taking `AlreadyExists` as success: the object is what an earlier attempt made.
    async fn create_with_retries<K>(
        &self,
        api: &Api<K>,
        object: &K,
        name: &str,
        action: &'static str,
    ) -> Result<(), CallError>
    where
        K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let params = PostParams::default();
        match self.send_with_retries(|| api.create(&params, object)).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(source) => Err(CallError::CreateFailed { action, name: name.to_string(), source }),
        }
    }

    /// Deletes an object, taking `NotFound` as success.
    async fn delete_with_retries<K>(&self, api: &Api<K>, name: &str) -> Result<(), CallError>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let params = DeleteParams::background();
        match self.send_with_retries(|| api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(CallError::DeleteFailed { name: name.to_string(), source }),
        }
    }

    /// Creates a tenant's namespace, labelled as ours.
    pub(crate) async fn create_namespace_with_retries(&self, name: &str) -> Result<(), CallError> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])),
                ..Default::default()
            },
            ..Default::default()
        };
        self.create_with_retries(
            &Api::<Namespace>::all(self.client.clone()),
            &namespace,
            name,
            "create namespace",
        )
        .await
    }

    /// Creates what an instance needs in its (existing) namespace `ns`: the ssh Secret and Service
    /// first, when it has ssh, then the Pod or VMI.
    pub(crate) async fn create_instance_with_retries(
        &self,
        desired: &Desired,
        ns: &str,
        config: &ManifestConfig,
    ) -> Result<(), CallError> {
        let (instance, request) = (&desired.instance, &desired.request);
        let name = manifest::object_name(&instance.id);
        if instance.runtime.needs_ssh() {
            let secrets = Api::<Secret>::namespaced(self.client.clone(), ns);
            self.create_with_retries(
                &secrets,
                &manifest::ssh_secret(instance, request),
                &name,
                "create secret",
            )
            .await?;
            let services = Api::<Service>::namespaced(self.client.clone(), ns);
            self.create_with_retries(
                &services,
                &manifest::ssh_service(instance, request),
                &name,
                "create service",
            )
            .await?;
        }
        match instance.runtime {
            Runtime::Vm => {
                let api = Api::<VirtualMachineInstance>::namespaced(self.client.clone(), ns);
                self.create_with_retries(&api, &manifest::vmi(instance, request, config), &name, "create VMI")
                    .await
            }
            Runtime::Container | Runtime::Rich => {
                let api = Api::<Pod>::namespaced(self.client.clone(), ns);
                self.create_with_retries(&api, &manifest::pod(instance, request, config), &name, "create pod")
                    .await
            }
        }
    }

    /// Deletes an instance's objects: its Pod or VMI, and the ssh Service and Secret beside it.
    pub(crate) async fn delete_instance_with_retries(
        &self,
        id: &InstanceId,
        workload: &Workload,
    ) -> Result<(), CallError> {
        let name = manifest::object_name(id);
        let ns = workload.namespace();
        match workload {
            Workload::Pod(_) => {
                self.delete_with_retries(&Api::<Pod>::namespaced(self.client.clone(), &ns), &name).await?
            }
            Workload::Vmi(_) => {
                self.delete_with_retries(
                    &Api::<VirtualMachineInstance>::namespaced(self.client.clone(), &ns),
                    &name,
                )
                .await?
            }
        }
        self.delete_with_retries(&Api::<Service>::namespaced(self.client.clone(), &ns), &name).await?;
        self.delete_with_retries(
            &Api::<Secret>::namespaced(self.client.clone(), &ns),
            &manifest::ssh_secret_name(id),
        )
        .await
    }

    /// Reads a node, for the address a VM's ssh NodePort is reached at.
    pub(crate) async fn get_node_with_retries(&self, name: &str) -> Result<Node, kube::Error> {
        let nodes = Api::<Node>::all(self.client.clone());
        self.send_with_retries(|| nodes.get(name)).await
    }

    /// Reads an instance's ssh Service, for its NodePort.
    pub(crate) async fn get_service_with_retries(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Service, kube::Error> {
        let services = Api::<Service>::namespaced(self.client.clone(), ns);
        self.send_with_retries(|| services.get(name)).await
    }

    /// Lists the PodMetrics of every instance's Pod, in all namespaces at once, so that an IDC costs
    /// one request per read. Tried once: the next read is the retry, and a fresh sample then is
    /// worth more than a late one now.
    pub(crate) async fn read_pod_metrics(&self) -> Result<Vec<PodMetrics>, CallError> {
        let metrics = Api::<PodMetrics>::all(self.client.clone());
        let instances = ListParams::default().labels(LABEL_INSTANCE);
        match self.send(metrics.list(&instances)).await {
            Ok(list) => Ok(list.items),
            Err(source) => Err(CallError::ReadMetricsFailed { source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": code, "reason": "Whatever", "message": format!("the server says {code}")
        }))
        .expect("a Status");
        kube::Error::Api(status.into())
    }

    #[test]
    fn busy_or_unavailable_clusters_are_retried_and_invalid_objects_are_not() {
        for code in [429, 500, 503, 504] {
            assert!(is_transient(&api_error(code)), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!is_transient(&api_error(code)), "{code}");
        }
        let refused = |code| CallError::CreateFailed {
            action: "create pod",
            name: "i-1".into(),
            source: api_error(code),
        };
        assert_eq!(
            refused(422).refusal().as_deref(),
            Some("the cluster refused to create pod: the server says 422")
        );
        // Forbidden (a namespace quota, say) and server errors may pass: the instance waits instead.
        assert_eq!(refused(403).refusal(), None);
        assert_eq!(refused(503).refusal(), None);
    }
}
