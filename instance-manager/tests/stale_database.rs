//! The platform's own failure caught by risk control: a control plane started against an empty or
//! stale database (a restored old backup, a wrong URL) sees every Pod of its clusters as an orphan.
//! Its orphan clean-up must trip the IDC's deletion breaker after the IDC's budget instead of
//! deleting the fleet.

mod common;

use common::{settle, start_reconciler};
use eci_core::IdcId;
use eci_core::risk::{Budget, Rules, Window};
use eci_edge_sim::{SimCluster, SimConfig};
use eci_instance_manager::ManagerConfig;
use eci_store::risk::AuditFilter;
use eci_store::testing::{self, each_backend};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

const IDC: &str = "gd-sz-1";

async fn pods(sim: &SimCluster, ns: &str) -> usize {
    let client =
        Client::try_from(kube::Config::new(sim.url().parse().expect("sim url"))).expect("kube client");
    let pods: Api<Pod> = Api::namespaced(client, ns);
    pods.list(&ListParams::default()).await.expect("list pods").items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_on_an_empty_database_trips_the_breaker_instead_of_deleting_the_fleet() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        let sim = SimCluster::start(SimConfig::default().name(IDC)).await.expect("start sim");
        let config = ManagerConfig::default().for_idc(&store.get_idc(&IdcId(IDC.into())).await.unwrap().0);
        let mut request = testing::batch_request(12);
        request.placement.areas = vec!["shenzhen".into()];
        request.placement.carriers = vec![eci_core::Carrier::Telecom];
        store.create_batch(&tenant, &request, None, testing::t0()).await.expect("batch");
        let live = start_reconciler(IDC, &sim, &store, config.clone());
        live.ready().await;
        assert_eq!(live.pass().await.expect("first pass").created, 12);
        drop(live);
        let ns = tenant.namespace();
        assert_eq!(pods(&sim, &ns).await, 12);

        // The same fleet, but none of its instances: every Pod looks like an orphan.
        let (empty, _dir) = testing::sqlite_store().await;
        testing::seed(&empty).await;
        let budget = Budget { deletions: 5, window_seconds: 300 };
        empty
            .set_platform_rules(&Rules { per_idc: budget, ..Rules::default() }, testing::t0())
            .await
            .unwrap();
        let stale = start_reconciler(IDC, &sim, &empty, config);
        stale.ready().await;
        let tripped = || {
            let empty = empty.clone();
            async move { !empty.open_breakers().await.unwrap().is_empty() }
        };
        settle(&stale, tripped).await;
        for _ in 0..3 {
            let report = stale.pass().await.expect("a pass after the trip");
            assert_eq!(report.orphans_deleted, 0, "{report:?}");
            assert_eq!(report.orphans_held, 1, "{report:?}");
        }
        let first = empty.audit_log(&AuditFilter::default(), None, 1000).await.unwrap().items;
        let allowed = first.iter().filter(|a| a.verdict == eci_core::risk::Verdict::Allowed).count();
        assert_eq!(allowed, 5, "the IDC's budget and not one more: {first:#?}");
        assert_eq!(pods(&sim, &ns).await, 12 - 5, "the rest of the fleet is still there");
        let open = empty.open_breakers().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].window, Window::Idc(IdcId(IDC.into())));
        let orphan_held: Vec<_> =
            first.iter().filter(|a| a.verdict == eci_core::risk::Verdict::Held).collect();
        let targets: Vec<_> = orphan_held.iter().map(|a| (a.target_id.clone(), a.at)).collect();
        assert_eq!(orphan_held.len(), 1, "held once, not at every pass: {targets:#?}");
        assert_eq!(orphan_held[0].actor, eci_core::risk::ActorKind::Reconciler);
        assert_eq!(orphan_held[0].rule, eci_core::risk::Rule::IdcWindow);
        assert_eq!(
            (orphan_held[0].target_kind, orphan_held[0].target_id.as_str()),
            (eci_core::risk::TargetKind::Orphan, IDC)
        );
    })
    .await;
}
