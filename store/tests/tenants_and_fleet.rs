//! Tenants, keys and the fleet on both backends.

use chrono::Duration;
use eci_core::{IdcId, IdcStatus, MilliCpu, Quota, Resources};
use eci_store::Error;
use eci_store::instances::InstanceFilter;
use eci_store::testing::{
    FLEET_ROOM, all_instances, assert_ledger_consistent, batch_request, each_backend, fleet, label,
    resources, seed, seed_fleet, seed_tenant, small, t0,
};

#[tokio::test]
async fn tenant_names_are_unique_and_quotas_can_be_replaced() {
    each_backend(|store| async move {
        let b = label(&store);
        let quota =
            Quota { max_cpu: Some(MilliCpu(8000)), max_instances: Some(4), requests_per_second: Some(10) };
        let tenant = seed_tenant(&store, "acme", quota).await;
        assert_eq!(tenant.quota, quota, "[{b}]");
        assert_eq!((tenant.used_instances, tenant.used_cpu), (0, MilliCpu(0)), "[{b}]");
        assert_eq!(store.get_tenant(&tenant.id).await.unwrap(), tenant, "[{b}]");
        assert_eq!(store.find_tenant_by_name("acme").await.unwrap(), Some(tenant.clone()), "[{b}]");
        assert_eq!(store.find_tenant_by_name("nobody").await.unwrap(), None, "[{b}]");

        let again = store.create_tenant("acme", Quota::default(), t0()).await;
        assert!(matches!(again, Err(Error::Conflict { what: "tenant name", .. })), "[{b}] {again:?}");

        let unlimited = store.set_quota(&tenant.id, Quota::default()).await.unwrap();
        assert_eq!(unlimited.quota, Quota::default(), "[{b}]");
        let missing = store.set_quota(&eci_core::TenantId("t-missing".into()), Quota::default()).await;
        assert!(matches!(missing, Err(Error::NotFound { .. })), "[{b}]");
        assert_eq!(store.list_tenants().await.unwrap().len(), 1, "[{b}]");
    })
    .await;
}

#[tokio::test]
async fn keys_authenticate_their_tenant_until_revoked() {
    each_backend(|store| async move {
        let b = label(&store);
        let tenant = seed_tenant(&store, "acme", Quota::default()).await;
        let key = store.create_key(Some(&tenant.id), false, "ci", "secret-1", t0()).await.unwrap();
        let admin = store.create_key(None, true, "root", "secret-admin", t0()).await.unwrap();

        let who = store.authenticate("secret-1").await.unwrap().expect("a live key");
        assert_eq!(
            (who.key_id, who.admin, who.tenant),
            (key.id.clone(), false, Some(tenant.clone())),
            "[{b}]"
        );
        let root = store.authenticate("secret-admin").await.unwrap().expect("a live key");
        assert!(root.admin && root.tenant.is_none() && root.key_id == admin.id, "[{b}]");
        assert_eq!(store.authenticate("wrong").await.unwrap(), None, "[{b}]");

        assert_eq!(store.list_keys(Some(&tenant.id)).await.unwrap(), vec![key.clone()], "[{b}]");
        assert_eq!(store.list_keys(None).await.unwrap().len(), 2, "[{b}]");

        let same_secret = store.create_key(Some(&tenant.id), false, "copy", "secret-1", t0()).await;
        assert!(matches!(same_secret, Err(Error::Conflict { .. })), "[{b}] {same_secret:?}");
        let no_tenant =
            store.create_key(Some(&eci_core::TenantId("t-missing".into())), false, "x", "s", t0()).await;
        assert!(matches!(no_tenant, Err(Error::NotFound { .. })), "[{b}]");

        store.revoke_key(&key.id, t0() + Duration::hours(1)).await.unwrap();
        assert_eq!(store.authenticate("secret-1").await.unwrap(), None, "[{b}] a revoked key is refused");
        assert!(matches!(store.revoke_key(&key.id, t0()).await, Err(Error::NotFound { .. })), "[{b}]");
        let listed = store.list_keys(Some(&tenant.id)).await.unwrap();
        assert_eq!(listed[0].revoked_at, Some(t0() + Duration::hours(1)), "[{b}]");
    })
    .await;
}

#[tokio::test]
async fn syncing_the_fleet_again_keeps_what_the_ledger_holds() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        store.create_batch(seeded.tenant_id(), &batch_request(10), None, t0()).await.unwrap();
        let before = store.list_idcs().await.unwrap();
        assert_eq!(before.len(), 6, "[{b}]");

        let mut grown = fleet();
        grown.idcs[0].capacity = resources(64, 256);
        seed_fleet(&store, &grown).await;
        let after = store.list_idcs().await.unwrap();
        for ((old_idc, old), (new_idc, new)) in before.iter().zip(&after) {
            assert_eq!(old_idc.id, new_idc.id, "[{b}]");
            assert_eq!((old.allocated, old.reserved), (new.allocated, new.reserved), "[{b}] {}", new_idc.id);
        }
        assert_eq!(after[0].1.total, resources(64, 256), "[{b}]");
        assert_eq!(after[0].0, grown.idcs[0], "[{b}] the description round-trips");
        assert_eq!(after[5].0.status, IdcStatus::Draining, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn nothing_new_lands_in_an_idc_that_is_not_active() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let idc = IdcId("gd-gz-1".into());
        store.set_idc_status(&idc, IdcStatus::Disconnected, t0()).await.unwrap();
        assert_eq!(store.get_idc(&idc).await.unwrap().0.status, IdcStatus::Disconnected, "[{b}]");
        let mut request = batch_request(FLEET_ROOM);
        request.placement.all_or_nothing = false;
        let batch = store.create_batch(&seeded.tenant.id, &request, None, t0()).await;
        // The seed tenant's quota (50) binds before the fleet does.
        assert_eq!(batch.unwrap().batch.count, 50, "[{b}]");
        let placed = all_instances(&store, tenant, &InstanceFilter::default()).await;
        assert!(placed.iter().all(|i| i.idc != idc), "[{b}] nothing in the disconnected IDC");
        assert_eq!(store.get_idc(&idc).await.unwrap().1.allocated, Resources::ZERO, "[{b}]");
        let missing = store.set_idc_status(&IdcId("nowhere".into()), IdcStatus::Active, t0()).await;
        assert!(matches!(missing, Err(Error::NotFound { .. })), "[{b}]");
        assert_eq!(small() * 50, placed.iter().fold(Resources::ZERO, |s, i| s + i.spec), "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}
