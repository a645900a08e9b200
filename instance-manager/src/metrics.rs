//! A typed `metrics.k8s.io/v1beta1` PodMetrics (what metrics-server, and edge-sim, serve) and the
//! instances' CPU samples read from a list of them (pure). k8s-openapi has no metrics types, and the
//! platform reads only what the autoscaler needs: which instance a Pod is, when it was measured and
//! what its containers used.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eci_core::{InstanceId, MilliCpu, QuantityError};
use eci_store::groups::CpuSample;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use serde::Deserialize;

use crate::manifest::LABEL_INSTANCE;

/// What a cluster's metrics API measured one Pod to use.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodMetrics {
    /// The Pod's name, namespace and labels; [`LABEL_INSTANCE`] names its instance.
    pub metadata: ObjectMeta,
    /// When the usage was measured (the end of the window it averages over).
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Each container's usage.
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

/// What one container of a Pod used.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContainerMetrics {
    /// The container's name.
    pub name: String,
    /// Quantity strings keyed by resource name (`cpu`, `memory`).
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
}

impl kube::Resource for PodMetrics {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "PodMetrics".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "metrics.k8s.io".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1beta1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What a PodMetrics list says of the platform's instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuReading {
    /// One sample per instance whose usage could be read.
    pub samples: Vec<CpuSample>,
    /// Instances whose Pod reported a cpu usage that is not a quantity, and why: they get no
    /// sample rather than a wrong one.
    pub unreadable: Vec<(InstanceId, QuantityError)>,
}

/// The CPU samples of the instances in `metrics`: each Pod labelled with its instance gives the sum
/// of its containers' cpu usage, at the moment it was measured, or at `read_at` (when the list
/// was read) if the cluster did not say. Pods of no instance, and Pods that report no container
/// (a Pod just started, not yet measured), give nothing.
pub fn cpu_samples(metrics: &[PodMetrics], read_at: DateTime<Utc>) -> CpuReading {
    let mut reading = CpuReading::default();
    for pod in metrics {
        let Some(instance) = pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_INSTANCE)) else {
            continue;
        };
        if pod.containers.is_empty() {
            continue;
        }
        let instance = InstanceId(instance.clone());
        let used = pod.containers.iter().try_fold(MilliCpu(0), |sum, container| {
            let cpu = container.usage.get("cpu").map_or("", String::as_str);
            usage_cpu(cpu).map(|used| MilliCpu(sum.0.saturating_add(used.0)))
        });
        match used {
            Ok(used) => reading.samples.push(CpuSample {
                instance,
                used,
                sampled_at: pod.timestamp.unwrap_or(read_at),
            }),
            Err(error) => reading.unreadable.push((instance, error)),
        }
    }
    reading
}

/// A cpu usage quantity in millicores. metrics-server writes usage in nanocores (`12345678n`), or
/// microcores when that is exact, which [`MilliCpu::parse`] refuses as finer than a request may
/// be; a usage is a measurement, so it is rounded to the nearest millicore instead.
fn usage_cpu(quantity: &str) -> Result<MilliCpu, QuantityError> {
    let quantity = quantity.trim();
    let (digits, per_milli) = match quantity.split_at_checked(quantity.len().saturating_sub(1)) {
        Some((digits, "n")) => (digits, 1_000_000),
        Some((digits, "u")) => (digits, 1_000),
        _ => return MilliCpu::parse(quantity),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::Malformed(quantity.to_string()));
    }
    let fine: u64 = digits.parse().map_err(|_| QuantityError::TooLarge(quantity.to_string()))?;
    Ok(MilliCpu(fine / per_milli + u64::from(fine % per_milli >= per_milli / 2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn list(items: serde_json::Value) -> Vec<PodMetrics> {
        serde_json::from_value(items).expect("PodMetrics")
    }

    fn sample(instance: &str, used: u64, sampled_at: &str) -> CpuSample {
        CpuSample { instance: InstanceId(instance.into()), used: MilliCpu(used), sampled_at: at(sampled_at) }
    }

    #[test]
    fn an_instances_sample_is_its_containers_cpu_summed_at_the_moment_the_cluster_measured() {
        let metrics = list(json!([
            {
                "metadata": {"name": "i-1", "namespace": "t-1", "labels": {"eci.io/instance": "i-1"}},
                "timestamp": "2030-01-01T00:00:15Z",
                "window": "30s",
                "containers": [
                    {"name": "main", "usage": {"cpu": "451m", "memory": "512Mi"}},
                    {"name": "sidecar", "usage": {"cpu": "250m", "memory": "8Mi"}},
                ],
            },
            {
                "metadata": {"name": "i-2", "namespace": "t-1", "labels": {"eci.io/instance": "i-2"}},
                "containers": [{"name": "main", "usage": {"cpu": "2"}}],
            },
        ]));
        let reading = cpu_samples(&metrics, at("2030-01-01T00:00:20Z"));
        assert_eq!(
            reading.samples,
            [sample("i-1", 701, "2030-01-01T00:00:15Z"), sample("i-2", 2_000, "2030-01-01T00:00:20Z")],
            "a Pod without a timestamp is sampled when the list was read"
        );
        assert!(reading.unreadable.is_empty());
    }

    #[test]
    fn pods_of_no_instance_and_pods_not_yet_measured_give_no_sample() {
        let metrics = list(json!([
            {"metadata": {"name": "coredns", "labels": {"k8s-app": "kube-dns"}}, "containers": [{"name": "c", "usage": {"cpu": "5m"}}]},
            {"metadata": {"name": "bare"}, "containers": [{"name": "c", "usage": {"cpu": "5m"}}]},
            {"metadata": {"name": "i-3", "labels": {"eci.io/instance": "i-3"}}, "containers": []},
        ]));
        assert_eq!(cpu_samples(&metrics, at("2030-01-01T00:00:00Z")), CpuReading::default());
    }

    #[test]
    fn metrics_servers_nanocores_round_to_the_nearest_millicore() {
        let cases = [
            ("12345678n", 12),
            ("12500000n", 13),
            ("499999n", 0),
            ("1500u", 2),
            ("1499u", 1),
            ("0n", 0),
            ("250m", 250),
            ("1.5", 1_500),
        ];
        for (quantity, millis) in cases {
            assert_eq!(usage_cpu(quantity), Ok(MilliCpu(millis)), "{quantity}");
        }
        assert!(matches!(usage_cpu("n"), Err(QuantityError::Malformed(_))));
        assert!(matches!(usage_cpu("1.5n"), Err(QuantityError::Malformed(_))));
        assert!(matches!(usage_cpu("99999999999999999999999n"), Err(QuantityError::TooLarge(_))));
    }

    #[test]
    fn a_pod_whose_usage_is_no_quantity_is_reported_and_not_sampled() {
        let metrics = list(json!([
            {"metadata": {"name": "i-4", "labels": {"eci.io/instance": "i-4"}}, "containers": [
                {"name": "a", "usage": {"cpu": "100m"}},
                {"name": "b", "usage": {"cpu": "lots"}},
            ]},
            {"metadata": {"name": "i-5", "labels": {"eci.io/instance": "i-5"}}, "containers": [
                {"name": "a", "usage": {"memory": "8Mi"}},
            ]},
            {"metadata": {"name": "i-6", "labels": {"eci.io/instance": "i-6"}}, "containers": [
                {"name": "a", "usage": {"cpu": "3m"}},
            ]},
        ]));
        let reading = cpu_samples(&metrics, at("2030-01-01T00:00:00Z"));
        assert_eq!(reading.samples, [sample("i-6", 3, "2030-01-01T00:00:00Z")]);
        assert_eq!(
            reading.unreadable,
            [
                (InstanceId("i-4".into()), QuantityError::Malformed("lots".into())),
                (InstanceId("i-5".into()), QuantityError::Empty),
            ]
        );
    }
}
