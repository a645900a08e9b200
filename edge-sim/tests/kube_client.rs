//! The real `kube` client and kube-runtime's watcher against a simulated cluster.

use std::time::Duration;

use eci_edge_sim::{EngineConfig, NodeSpec, Resource, SimCluster, SimConfig, StoreConfig};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;
use tokio::sync::mpsc;

/// Poll a `Stream` into a channel. The `futures` crate is not a workspace dependency, so tower's
/// `call_all` (which accepts any stream) feeds an axum `Body`, whose frames http-body-util awaits.
macro_rules! drive {
    ($stream:expr) => {{
        let (tx, rx) = mpsc::unbounded_channel();
        let service = tower::service_fn(move |item| {
            let _ = tx.send(item);
            async { Ok::<_, std::convert::Infallible>(axum::body::Bytes::new()) }
        });
        let mut body = axum::body::Body::from_stream(tower::ServiceExt::call_all(service, $stream));
        tokio::spawn(
            async move { while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {} },
        );
        rx
    }};
}

fn client(cluster: &SimCluster) -> Client {
    Client::try_from(Config::new(cluster.url().parse().expect("the sim url is a uri"))).expect("a client")
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))
    .expect("a valid pod")
}

/// Receive until `done` holds for an item, with a generous safety net against hanging forever.
async fn receive_until<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    mut done: impl FnMut(&T) -> bool,
) -> Vec<T> {
    let mut seen = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching item; saw {seen:#?}"))
            .expect("the stream ended");
        let finished = done(&item);
        seen.push(item);
        if finished {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_pod_is_created_read_listed_by_label_and_deleted_through_kube() -> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");

    let created = pods.create(&PostParams::default(), &pod("web-1", "web")).await?;
    pods.create(&PostParams::default(), &pod("db-1", "db")).await?;
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    let fetched = pods.get("web-1").await?;
    assert_eq!(fetched.metadata.resource_version, created.metadata.resource_version);

    let webs = pods.list(&ListParams::default().labels("app in (web),!tier")).await?;
    let names: Vec<_> = webs.items.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
    assert_eq!(names, ["web-1"]);
    assert!(webs.metadata.resource_version.is_some_and(|rv| !rv.is_empty()));

    let all: Api<Pod> = Api::all(client(&cluster));
    assert_eq!(all.list(&ListParams::default().limit(1)).await?.items.len(), 1);

    let deleted = pods.delete("web-1", &DeleteParams::background()).await?;
    assert!(deleted.is_left(), "the deleted object comes back");
    assert!(pods.get_opt("web-1").await?.is_none());
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn missing_and_duplicate_objects_are_kube_api_errors_with_404_and_409() -> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");

    let missing = pods.get("nope").await.expect_err("no such pod");
    let kube::Error::Api(status) = missing else { panic!("expected an api error, got {missing:?}") };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "pods \"nope\" not found");

    pods.create(&PostParams::default(), &pod("twice", "x")).await?;
    let duplicate = pods.create(&PostParams::default(), &pod("twice", "x")).await.expect_err("taken");
    let kube::Error::Api(status) = duplicate else { panic!("expected an api error, got {duplicate:?}") };
    assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists"));

    let nameless: Pod = serde_json::from_value(json!({"metadata": {}, "spec": {"containers": []}}))?;
    let invalid = pods.create(&PostParams::default(), &nameless).await.expect_err("no name");
    let kube::Error::Api(status) = invalid else { panic!("expected an api error, got {invalid:?}") };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn namespaces_are_cluster_scoped_and_pods_need_one() -> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let namespaces: Api<Namespace> = Api::all(client(&cluster));
    let team: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}}))?;
    namespaces.create(&PostParams::default(), &team).await?;
    let names: Vec<_> = namespaces
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["default", "kube-public", "kube-system", "team-a"]);

    let elsewhere: Api<Pod> = Api::namespaced(client(&cluster), "nowhere");
    let err = elsewhere.create(&PostParams::default(), &pod("p", "x")).await.expect_err("no namespace");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_status_subresource_takes_a_merge_patch_and_leaves_the_spec() -> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");
    pods.create(&PostParams::default(), &pod("p", "x")).await?;
    let patch = json!({"spec": {"nodeName": "ignored"}, "status": {"phase": "Running", "podIP": "10.1.0.7"}});
    let patched = pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let status = patched.status.expect("a status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.7"));
    assert_eq!(patched.spec.and_then(|s| s.node_name), None);
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn kube_runtimes_watcher_sees_a_pod_added_modified_and_deleted() -> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");
    let mut events = drive!(watcher(pods.clone(), watcher::Config::default().labels("app=web")));
    receive_until(&mut events, |e| matches!(e, Ok(watcher::Event::InitDone))).await;

    pods.create(&PostParams::default(), &pod("web-1", "web")).await?;
    pods.create(&PostParams::default(), &pod("other", "db")).await?;
    let seen = receive_until(&mut events, |e| matches!(e, Ok(watcher::Event::Apply(_)))).await;
    let Some(Ok(watcher::Event::Apply(added))) = seen.last() else { unreachable!() };
    assert_eq!(added.metadata.name.as_deref(), Some("web-1"));

    let running = json!({"status": {"phase": "Running"}});
    pods.patch_status("web-1", &PatchParams::default(), &Patch::Merge(&running)).await?;
    receive_until(&mut events, |e| {
        matches!(e, Ok(watcher::Event::Apply(p)) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;

    pods.delete("web-1", &DeleteParams::default()).await?;
    let seen = receive_until(&mut events, |e| matches!(e, Ok(watcher::Event::Delete(_)))).await;
    assert!(
        seen.iter().all(
            |e| !matches!(e, Ok(watcher::Event::Apply(p)) if p.metadata.name.as_deref() == Some("other"))
        ),
        "the selector keeps other pods out: {seen:#?}"
    );
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn kube_runtimes_watcher_relists_once_after_its_resource_version_expires() -> anyhow::Result<()> {
    let config = SimConfig::default().without_engine().store(StoreConfig::default().history_limit(2));
    let cluster = SimCluster::start(config).await?;
    let store = cluster.store().clone();
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");
    pods.create(&PostParams::default(), &pod("watched", "web")).await?;

    // The watcher follows one pod by name, so changes to other pods move the history on without it.
    let config = watcher::Config::default().fields("metadata.name=watched").timeout(1);
    let mut events = drive!(watcher(pods.clone(), config));
    receive_until(&mut events, |e| matches!(e, Ok(watcher::Event::InitDone))).await;
    for i in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("noise-{i}"), "db")).await?;
    }

    // Its watch times out after a second; the re-watch from its old version is refused as expired.
    let seen = receive_until(&mut events, |e| matches!(e, Ok(watcher::Event::InitDone))).await;
    assert!(
        seen.iter().any(|e| matches!(e, Err(watcher::Error::WatchError(s)) if s.code == 410)),
        "the watcher saw the 410: {seen:#?}"
    );
    assert_eq!(cluster.stats().expired_watches(), 1);
    assert_eq!(cluster.stats().lists(), 2, "one list at start, one relist after expiry");

    store.modify(Resource::Pods, Some("default"), "watched", |p| p["status"]["phase"] = json!("Running"))?;
    receive_until(&mut events, |e| {
        matches!(e, Ok(watcher::Event::Apply(p)) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    assert_eq!(cluster.stats().lists(), 2, "no further relists");
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn many_clusters_run_side_by_side_on_their_own_ports() -> anyhow::Result<()> {
    let a = SimCluster::start(SimConfig::default().without_engine().name("idc-a")).await?;
    let b = SimCluster::start(SimConfig::default().without_engine().name("idc-b")).await?;
    assert_ne!(a.port(), b.port());
    let pods_a: Api<Pod> = Api::namespaced(client(&a), "default");
    let pods_b: Api<Pod> = Api::namespaced(client(&b), "default");
    pods_a.create(&PostParams::default(), &pod("only-in-a", "x")).await?;
    assert!(pods_b.get_opt("only-in-a").await?.is_none());
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_created_through_kube_is_scheduled_and_runs_or_waits_as_unschedulable() -> anyhow::Result<()> {
    let config = SimConfig::default()
        .engine(EngineConfig::default().boot_delay(Duration::from_millis(10)))
        .node(NodeSpec::new("edge-node-1").cpu_millis(1000).internal_ip("192.168.7.1"));
    let cluster = SimCluster::start(config).await?;
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");
    let mut small = pod("small", "web");
    small.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "500m"}}))?);
    pods.create(&PostParams::default(), &small).await?;
    let running = |p: Option<&Pod>| p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running");
    let pod = await_condition(pods.clone(), "small", running).await?.expect("the pod exists");
    let status = pod.status.expect("a status");
    assert_eq!(status.host_ip.as_deref(), Some("192.168.7.1"));
    assert!(status.pod_ip.is_some());
    assert_eq!(pod.spec.and_then(|s| s.node_name).as_deref(), Some("edge-node-1"));

    let mut big = pod_named_with_cpu("big", "2");
    big.metadata.labels = None;
    pods.create(&PostParams::default(), &big).await?;
    let unschedulable = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref()).is_some_and(|cs| {
            cs.iter().any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
        })
    };
    await_condition(pods.clone(), "big", unschedulable).await?;
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_webhook_configuration_is_created_read_listed_replaced_patched_and_deleted_through_kube()
-> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client(&cluster));
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "guard"},
        "webhooks": [{
            "name": "guard.eci.io",
            "clientConfig": {"url": "https://127.0.0.1:9443/validate"},
            "rules": [{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    }))?;

    let created = configurations.create(&PostParams::default(), &configuration).await?;
    let webhook = &created.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"), "defaulted as kube-apiserver does");
    assert_eq!(webhook.timeout_seconds, Some(10));
    assert_eq!(configurations.get("guard").await?.metadata.uid, created.metadata.uid);
    let listed = configurations.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);

    let mut replacement = created.clone();
    replacement.webhooks.as_mut().expect("webhooks")[0].timeout_seconds = Some(3);
    let replaced = configurations.replace("guard", &PostParams::default(), &replacement).await?;
    assert_eq!(replaced.webhooks.expect("webhooks")[0].timeout_seconds, Some(3));

    let ignore = json!({"webhooks": [{"name": "guard.eci.io", "failurePolicy": "Ignore"}]});
    let patched = configurations.patch("guard", &PatchParams::default(), &Patch::Strategic(&ignore)).await?;
    let webhook = &patched.webhooks.expect("webhooks")[0];
    assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(webhook.timeout_seconds, Some(3), "the webhook merged by name, the rest kept");

    let too_long = json!({"webhooks": [{"name": "guard.eci.io", "timeoutSeconds": 31}]});
    let refused = configurations.patch("guard", &PatchParams::default(), &Patch::Strategic(&too_long)).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("the timeout value must be between 1 and 30 seconds"),
                "{status:?}"
            );
        }
        other => panic!("a 31 s timeout is refused: {other:?}"),
    }

    configurations.delete("guard", &DeleteParams::default()).await?;
    assert!(configurations.list(&ListParams::default()).await?.items.is_empty());
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_collection_of_pods_is_deleted_by_label_through_kube() -> anyhow::Result<()> {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await?;
    let pods: Api<Pod> = Api::namespaced(client(&cluster), "default");
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        pods.create(&PostParams::default(), &pod(name, app)).await?;
    }
    let deleted =
        pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=web")).await?;
    let deleted = deleted.left().expect("the deleted pods");
    let names: Vec<_> = deleted.items.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
    assert_eq!(names, ["web-1", "web-2"]);
    let left = pods.list(&ListParams::default()).await?;
    assert_eq!(left.items.iter().filter_map(|p| p.metadata.name.as_deref()).collect::<Vec<_>>(), ["db-1"]);
    cluster.shutdown().await?;
    Ok(())
}

fn pod_named_with_cpu(name: &str, cpu: &str) -> Pod {
    let mut p = pod(name, "x");
    p.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": cpu}})).expect("requirements"));
    p
}
