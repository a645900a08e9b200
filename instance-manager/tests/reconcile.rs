//! The instance manager against a simulated IDC cluster, through the real `kube` client: instances
//! become Pods, Services and Secrets; what the cluster reports comes back to the database; released
//! instances stop (`stopping`, capacity held) until their objects are gone, then end; vanished objects
//! fail their instances; a restart creates nothing twice.

mod common;

use common::{settle, start_reconciler};
use eci_core::{BatchState, IdcId, InstanceState, Runtime};
use std::collections::BTreeMap;

use eci_edge_sim::{NodeSpec, SimCluster, SimConfig, StoreConfig};
use eci_instance_manager::ManagerConfig;
use eci_instance_manager::kubevirt::VirtualMachineInstance;
use eci_store::Store;
use eci_store::testing::{self, each_backend};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

const IDC: &str = "gd-sz-1";

/// A client for the test to look at the cluster with, beside the reconciler's own.
async fn client(sim: &SimCluster) -> Client {
    let config = kube::Config::new(sim.url().parse().expect("sim url"));
    Client::try_from(config).expect("kube client")
}

fn config() -> ManagerConfig {
    ManagerConfig::default()
}

async fn states(store: &Store, tenant: &eci_core::TenantId) -> Vec<(String, InstanceState)> {
    let page = store.list_instances(tenant, &Default::default(), None, 1000).await.expect("list instances");
    page.items.into_iter().map(|i| (i.id.0, i.state)).collect()
}

/// What a kubelet would write once a pod runs.
async fn run_pod(pods: &Api<Pod>, name: &str, ip: &str) {
    let status = json!({ "status": { "phase": "Running", "podIP": ip, "hostIP": "192.0.2.10" } });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("patch status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_become_pods_and_their_state_comes_back() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        // Pods deleted with a grace period linger as terminating, as on a real kubelet.
        let sim = SimCluster::start(
            SimConfig::default()
                .name(IDC)
                .without_engine()
                .store(StoreConfig::default().honour_grace_period(true))
                .node(NodeSpec::new("node-1").internal_ip("192.0.2.10")),
        )
        .await
        .expect("start sim");
        let kube = client(&sim).await;
        // This IDC's rich containers run under its own RuntimeClass.
        let (mut idc, _) = store.get_idc(&IdcId(IDC.into())).await.unwrap();
        idc.rich_runtime_class = Some("kata-clh".into());
        store.upsert_idc(&idc, testing::t0()).await.unwrap();
        let mut config = config().for_idc(&store.get_idc(&idc.id).await.unwrap().0);
        config.manifest.stop_grace_seconds = 1;

        let mut containers = testing::batch_request(3);
        containers.placement.areas = vec!["shenzhen".into()];
        containers.placement.carriers = vec![eci_core::Carrier::Telecom];
        let batch = store.create_batch(&tenant, &containers, None, testing::t0()).await.expect("batch").batch;
        let mut rich = containers.clone();
        rich.count = 1;
        rich.runtime = Runtime::Rich;
        rich.workload.ssh_keys = vec!["ssh-ed25519 AAAAC3Nz ops@example".into()];
        store.create_batch(&tenant, &rich, None, testing::t0()).await.expect("rich batch");

        let reconciler = start_reconciler(IDC, &sim, &store, config.clone());
        reconciler.ready().await;
        let report = reconciler.pass().await.expect("first pass");
        assert_eq!(report.created, 4, "{report:?}");
        assert!(states(&store, &tenant).await.iter().all(|(_, s)| *s == InstanceState::Creating));

        let ns = tenant.namespace();
        let pods: Api<Pod> = Api::namespaced(kube.clone(), &ns);
        let listed = pods.list(&ListParams::default()).await.expect("list pods");
        assert_eq!(listed.items.len(), 4);
        let rich_pod = listed
            .items
            .iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()) == Some("kata-clh"))
            .expect("the rich instance runs under the IDC's RuntimeClass");
        let rich_name = rich_pod.metadata.name.clone().unwrap();
        let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
        secrets.get(&format!("{rich_name}-ssh")).await.expect("the rich instance's keys");
        let services: Api<Service> = Api::namespaced(kube.clone(), &ns);
        let node_port = services
            .get(&rich_name)
            .await
            .expect("the rich instance's ssh service")
            .spec
            .unwrap()
            .ports
            .unwrap()[0]
            .node_port
            .expect("a node port");

        // A restarted manager finds every object already there and creates nothing twice.
        let again = start_reconciler(IDC, &sim, &store, config.clone());
        again.ready().await;
        assert_eq!(again.pass().await.expect("pass after restart").created, 0);
        assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 4);

        for (i, pod) in listed.items.iter().enumerate() {
            run_pod(&pods, pod.metadata.name.as_deref().unwrap(), &format!("10.0.0.{}", i + 1)).await;
        }
        let store2 = store.clone();
        let tenant2 = tenant.clone();
        settle(&reconciler, || {
            let (store, tenant) = (store2.clone(), tenant2.clone());
            async move { states(&store, &tenant).await.iter().all(|(_, s)| *s == InstanceState::Running) }
        })
        .await;
        let rich_instance =
            store.get_instance(&tenant, &eci_core::InstanceId(rich_name.clone())).await.unwrap();
        assert!(rich_instance.ip.as_deref().is_some_and(|ip| ip.starts_with("10.0.0.")));
        let ssh = rich_instance.ssh.expect("a running rich instance has an ssh endpoint");
        assert_eq!(
            (ssh.host.as_str(), i32::from(ssh.port), ssh.user.as_str()),
            ("192.0.2.10", node_port, "root")
        );
        assert!(rich_instance.started_at.is_some());

        // Releasing a batch stops its instances: they keep their capacity while their Pods shut down
        // within the grace period, then end and give it back.
        let allocated = testing::ledger(&store).await[&IdcId(IDC.into())].allocated;
        let released = store
            .release_batch(&tenant, &batch.id, BatchState::Released, &testing::operator(), testing::t0())
            .await
            .unwrap();
        assert_eq!(released.counts, BTreeMap::from([(InstanceState::Stopping, 3)]));
        let pods2 = pods.clone();
        settle(&reconciler, || {
            let pods = pods2.clone();
            async move {
                let listed = pods.list(&ListParams::default()).await.unwrap().items;
                listed.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count() == 3
            }
        })
        .await;
        reconciler.pass().await.expect("pass while the Pods shut down");
        let stopping = store.get_batch(&tenant, &batch.id).await.unwrap();
        assert_eq!(stopping.counts, BTreeMap::from([(InstanceState::Stopping, 3)]));
        assert_eq!(testing::ledger(&store).await[&IdcId(IDC.into())].allocated, allocated);
        let (s, t, b) = (store.clone(), tenant.clone(), batch.id.clone());
        settle(&reconciler, || {
            let (store, tenant, batch) = (s.clone(), t.clone(), b.clone());
            async move {
                store.get_batch(&tenant, &batch).await.unwrap().counts
                    == BTreeMap::from([(InstanceState::Terminated, 3)])
            }
        })
        .await;
        assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 1);
        assert_eq!(
            testing::ledger(&store).await[&IdcId(IDC.into())].allocated,
            allocated - containers.spec * 3,
            "released capacity goes back once the Pods are gone"
        );

        // A Pod removed behind the platform's back fails its instance, with a reason.
        pods.delete(&rich_name, &Default::default()).await.expect("delete pod");
        let store3 = store.clone();
        let tenant3 = tenant.clone();
        let rich_id = eci_core::InstanceId(rich_name.clone());
        settle(&reconciler, || {
            let (store, tenant, id) = (store3.clone(), tenant3.clone(), rich_id.clone());
            async move { store.get_instance(&tenant, &id).await.unwrap().state == InstanceState::Failed }
        })
        .await;
        let failed = store.get_instance(&tenant, &rich_id).await.unwrap();
        assert!(failed.failure_reason.unwrap().contains("disappeared"));
        testing::assert_ledger_consistent(&store).await;
        sim.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_the_instance_with_the_kubernetes_reason() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        let sim = SimCluster::start(SimConfig::default().name(IDC).without_engine()).await.expect("start sim");
        let kube = client(&sim).await;
        let mut request = testing::batch_request(1);
        request.placement.areas = vec!["shenzhen".into()];
        request.placement.carriers = vec![eci_core::Carrier::Telecom];
        store.create_batch(&tenant, &request, None, testing::t0()).await.expect("batch");
        let reconciler = start_reconciler(IDC, &sim, &store, config());
        reconciler.ready().await;
        reconciler.pass().await.expect("pass");
        let ns = tenant.namespace();
        let pods: Api<Pod> = Api::namespaced(kube.clone(), &ns);
        let name = pods.list(&ListParams::default()).await.unwrap().items[0].metadata.name.clone().unwrap();
        let status = json!({ "status": { "phase": "Pending", "containerStatuses": [{
            "name": "main", "image": "nginx:1.27", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image" } } }] } });
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        let id = eci_core::InstanceId(name.clone());
        let (s, t) = (store.clone(), tenant.clone());
        settle(&reconciler, || {
            let (store, tenant, id) = (s.clone(), t.clone(), id.clone());
            async move { store.get_instance(&tenant, &id).await.unwrap().state == InstanceState::Failed }
        })
        .await;
        let failed = store.get_instance(&tenant, &id).await.unwrap();
        assert_eq!(failed.failure_reason.as_deref(), Some("ImagePullBackOff: Back-off pulling image"));
        testing::assert_ledger_consistent(&store).await;
        // The failed instance's Pod is an orphan now and is cleaned up.
        let p = pods.clone();
        settle(&reconciler, || {
            let pods = p.clone();
            async move { pods.list(&ListParams::default()).await.unwrap().items.is_empty() }
        })
        .await;
        sim.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A `vm` instance becomes a KubeVirt VMI (with its keys in cloud-init and an ssh Service), runs on a
/// node of the IDC with the guest's address and an ssh endpoint at the IDC's ssh ingress, and on
/// release its VMI, Service and Secret go and it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_instance_runs_as_a_kubevirt_vmi_with_ssh_and_is_removed_on_release() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        const VM_IDC: &str = "zj-hz-2";
        let sim = SimCluster::start(
            SimConfig::default()
                .name(VM_IDC)
                .engine(eci_edge_sim::EngineConfig::default().boot_delay(std::time::Duration::ZERO))
                .node(NodeSpec::new("hz-node-1").internal_ip("198.51.100.7")),
        )
        .await
        .expect("start sim");
        let kube = client(&sim).await;
        let mut request = testing::batch_request(2);
        request.runtime = Runtime::Vm;
        request.workload.image = "quay.io/containerdisks/ubuntu:24.04".into();
        request.placement.areas = vec!["hangzhou".into()];
        request.placement.carriers = vec![eci_core::Carrier::Bgp];
        request.workload.ssh_keys = vec!["ssh-ed25519 AAAAC3Nz ops@example".into()];
        let batch = store.create_batch(&tenant, &request, None, testing::t0()).await.expect("vm batch").batch;
        // The IDC's ssh ingress forwards its nodes' NodePorts; endpoints name it, not the node.
        let (mut idc, _) = store.get_idc(&IdcId(VM_IDC.into())).await.unwrap();
        idc.ssh_ingress_host = Some("203.0.113.10".into());
        store.upsert_idc(&idc, testing::t0()).await.unwrap();
        let idc = store.get_idc(&idc.id).await.unwrap().0;
        let reconciler = start_reconciler(&idc.id.0, &sim, &store, config().for_idc(&idc));
        let (s, t) = (store.clone(), tenant.clone());
        settle(&reconciler, || {
            let (store, tenant) = (s.clone(), t.clone());
            async move { states(&store, &tenant).await.iter().all(|(_, s)| *s == InstanceState::Running) }
        })
        .await;

        let ns = tenant.namespace();
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(kube.clone(), &ns);
        let services: Api<Service> = Api::namespaced(kube.clone(), &ns);
        let listed = vmis.list(&ListParams::default()).await.expect("list VMIs").items;
        assert_eq!(listed.len(), 2);
        assert!(Api::<Pod>::all(kube.clone()).list(&ListParams::default()).await.unwrap().items.is_empty());
        for vmi in &listed {
            let name = vmi.metadata.name.clone().unwrap();
            let instance = store.get_instance(&tenant, &eci_core::InstanceId(name.clone())).await.unwrap();
            let guest_ip = vmi.status.as_ref().unwrap().interfaces[0].ip_address.clone();
            assert_eq!(instance.ip, guest_ip, "the instance's IP is the guest's");
            let node_port = services.get(&name).await.unwrap().spec.unwrap().ports.unwrap()[0].node_port;
            let ssh = instance.ssh.expect("a running VM has an ssh endpoint");
            assert_eq!((ssh.host.as_str(), Some(i32::from(ssh.port))), ("203.0.113.10", node_port));
        }

        store
            .release_batch(&tenant, &batch.id, BatchState::Released, &testing::operator(), testing::t0())
            .await
            .unwrap();
        let (s, t, b) = (store.clone(), tenant.clone(), batch.id.clone());
        settle(&reconciler, || {
            let (store, tenant, batch) = (s.clone(), t.clone(), b.clone());
            async move {
                store.get_batch(&tenant, &batch).await.unwrap().counts
                    == BTreeMap::from([(InstanceState::Terminated, 2)])
            }
        })
        .await;
        assert!(vmis.list(&ListParams::default()).await.unwrap().items.is_empty());
        assert!(services.list(&ListParams::default()).await.unwrap().items.is_empty());
        let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
        assert!(secrets.list(&ListParams::default()).await.unwrap().items.is_empty());
        testing::assert_ledger_consistent(&store).await;
        sim.shutdown().await.expect("shutdown");
    })
    .await;
}
