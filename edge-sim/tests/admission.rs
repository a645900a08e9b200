//! Validating admission webhooks on DELETE, through real HTTP: a simulated cluster calls an HTTPS
//! webhook receiver started here, its certificate signed by a certificate authority made here.
//!
//! The kubectl test needs kubectl on the PATH: when it is missing it fails under `CI=true` and
//! prints a loud SKIPPED line otherwise.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use eci_edge_sim::{Resource, SimCluster, SimConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority of one test's own, and the certificate it signed for a receiver on
/// 127.0.0.1.
struct Authority {
    /// The authority's certificate, as a configuration's `caBundle` carries it (before base64).
    pem: String,
    /// The receiver's certificate.
    server_cert: CertificateDer<'static>,
    /// The receiver's private key (PKCS #8).
    server_key: Vec<u8>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca");
        let key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        Authority { pem: ca.pem(), server_cert: server.der().clone(), server_key: key.serialize_der() }
    }

    /// The `caBundle` of a configuration that trusts this authority.
    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.pem)
    }
}

/// What a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Refuses the delete of objects labelled `protected=true` ("this object is protected") and
    /// allows every other.
    DenyProtected,
    /// Never answers.
    Silent,
}

#[derive(Clone)]
struct ReceiverState {
    behaviour: Behaviour,
    reviews: Arc<Mutex<Vec<Value>>>,
}

/// A TLS listener for `axum::serve`: a connection is handed over once its handshake is done, and
/// one whose client refused the certificate is dropped.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            let handshake = tokio::time::timeout(Duration::from_secs(5), self.tls.accept(stream));
            if let Ok(Ok(tls)) = handshake.await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS webhook receiver on a free loopback port; it keeps every review it was sent.
struct Receiver {
    url: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(authority: &Authority, behaviour: Behaviour) -> Receiver {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(authority.server_key.clone()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![authority.server_cert.clone()], key)
            .expect("server config");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let url = format!("https://{}/validate", tcp.local_addr().expect("an address"));
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState { behaviour, reviews: reviews.clone() };
        let app = Router::new().route("/validate", post(validate)).with_state(state);
        let listener = TlsListener { tcp, tls: TlsAcceptor::from(Arc::new(config)) };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the receiver serves");
        });
        Receiver { url, reviews, task }
    }

    fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().expect("reviews").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn validate(State(state): State<ReceiverState>, Json(review): Json<Value>) -> Json<Value> {
    state.reviews.lock().expect("reviews").push(review.clone());
    if state.behaviour == Behaviour::Silent {
        std::future::pending::<()>().await;
    }
    let uid = review["request"]["uid"].clone();
    let protected = review.pointer("/request/oldObject/metadata/labels/protected") == Some(&json!("true"));
    let response = match protected {
        true => {
            json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": "this object is protected"}})
        }
        false => json!({"uid": uid, "allowed": true}),
    };
    Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

/// A configuration named `name` of one webhook `{webhook}.eci.io` with `rules`, called at `url`,
/// its fields overridden by `overrides`.
fn configuration(name: &str, url: &str, ca_bundle: &str, rules: Value, overrides: Value) -> Value {
    let mut webhook = json!({
        "name": format!("{name}.eci.io"),
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": rules,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    for (field, value) in overrides.as_object().into_iter().flatten() {
        webhook[field] = value.clone();
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    })
}

fn deleting(group: &str, resources: &str) -> Value {
    json!([{"operations": ["DELETE"], "apiGroups": [group], "apiVersions": ["v1"], "resources": [resources]}])
}

/// A cluster without a stage engine, with a `shop` namespace labelled `team=shop` beside the usual.
async fn cluster() -> SimCluster {
    let cluster = SimCluster::start(SimConfig::default().without_engine()).await.expect("started");
    let shop = json!({"metadata": {"name": "shop", "labels": {"team": "shop"}}});
    cluster.store().create(Resource::Namespaces, None, shop).expect("shop");
    cluster
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}})
}

fn create_pod(cluster: &SimCluster, namespace: &str, name: &str, labels: Value) {
    cluster.store().create(Resource::Pods, Some(namespace), pod(name, labels)).expect("pod created");
}

fn store_configuration(cluster: &SimCluster, configuration: Value) {
    cluster.store().create(Resource::ValidatingWebhookConfigurations, None, configuration).expect("stored");
}

/// Sends one request to the cluster's API and returns the status code and the JSON body.
async fn send(cluster: &SimCluster, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    send_as(cluster, method, path, body, None).await
}

async fn send_as(
    cluster: &SimCluster,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client.request(method, format!("{}{path}", cluster.url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the cluster answers");
    let code = response.status().as_u16();
    (code, response.json().await.expect("a JSON body"))
}

fn exists(cluster: &SimCluster, resource: Resource, namespace: Option<&str>, name: &str) -> bool {
    cluster.store().get(resource, namespace, name).is_ok()
}

#[tokio::test]
async fn a_denied_pod_delete_is_forbidden_with_the_webhooks_message_and_an_allowed_one_happens() {
    let authority = Authority::new("guard-ca");
    let receiver = Receiver::start(&authority, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    store_configuration(
        &cluster,
        configuration("guard", &receiver.url, &authority.ca_bundle(), deleting("", "pods"), json!({})),
    );
    create_pod(&cluster, "shop", "keep", json!({"protected": "true", "app": "web"}));
    create_pod(&cluster, "shop", "drop", json!({"app": "web"}));

    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/keep", Some(options)).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["code"], 403);
    assert_eq!(
        status["message"],
        "admission webhook \"guard.eci.io\" denied the request: this object is protected"
    );
    assert!(exists(&cluster, Resource::Pods, Some("shop"), "keep"), "a refused delete deletes nothing");

    let (code, deleted) =
        send_as(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/drop", None, Some("abcdefghijklmnop"))
            .await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["metadata"]["name"], "drop");
    assert!(!exists(&cluster, Resource::Pods, Some("shop"), "drop"));

    let reviews = receiver.reviews();
    assert_eq!(reviews.len(), 2, "{reviews:#?}");
    let review = &reviews[0];
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let request = &review["request"];
    assert_eq!(request["uid"].as_str().map(str::len), Some(36), "a fresh uuid: {request}");
    assert_ne!(request["uid"], reviews[1]["request"]["uid"]);
    assert_eq!(request["kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
    assert_eq!(request["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));
    assert_eq!(request["requestKind"], request["kind"]);
    assert_eq!(request["requestResource"], request["resource"]);
    assert_eq!(request["name"], "keep");
    assert_eq!(request["namespace"], "shop");
    assert_eq!(request["operation"], "DELETE");
    assert_eq!(
        request["userInfo"],
        json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]})
    );
    assert_eq!(request["object"], Value::Null);
    assert_eq!(request["dryRun"], false);
    assert_eq!(
        request["options"],
        json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"})
    );
    let stored = cluster.store().get(Resource::Pods, Some("shop"), "keep").expect("kept");
    assert_eq!(request["oldObject"], stored, "the object as stored, labels and all");
    assert_eq!(request["oldObject"]["metadata"]["labels"]["protected"], "true");
    assert_eq!(reviews[1]["request"]["userInfo"]["username"], "token:abcdefgh");
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test]
async fn object_and_namespace_selectors_that_do_not_match_skip_the_webhook() {
    let authority = Authority::new("selectors-ca");
    let receiver = Receiver::start(&authority, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    let selectors = json!({
        "objectSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
    });
    store_configuration(
        &cluster,
        configuration("guard", &receiver.url, &authority.ca_bundle(), deleting("", "pods"), selectors),
    );
    create_pod(&cluster, "shop", "web", json!({"protected": "true", "tier": "web"}));
    create_pod(&cluster, "default", "db", json!({"protected": "true", "tier": "db"}));
    create_pod(&cluster, "shop", "db", json!({"protected": "true", "tier": "db"}));

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/web", None).await;
    assert_eq!(code, 200, "the object selector does not pick it: {status}");
    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/default/pods/db", None).await;
    assert_eq!(code, 200, "the namespace selector does not pick default: {status}");
    assert!(receiver.reviews().is_empty(), "no call: {:#?}", receiver.reviews());

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/db", None).await;
    assert_eq!(code, 403, "both selectors pick it: {status}");
    let reviews = receiver.reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["request"]["oldObject"]["metadata"]["labels"]["tier"], "db");
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test]
async fn a_webhook_that_is_down_refuses_under_fail_and_lets_the_delete_go_under_ignore() {
    let authority = Authority::new("down-ca");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
        listener.local_addr().expect("an address").port()
    };
    let url = format!("https://127.0.0.1:{port}/validate");
    let cluster = cluster().await;
    store_configuration(
        &cluster,
        configuration("down", &url, &authority.ca_bundle(), deleting("", "pods"), json!({})),
    );
    create_pod(&cluster, "shop", "web", json!({}));

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/web", None).await;
    assert_eq!(code, 500, "{status}");
    assert_eq!(status["reason"], "InternalError");
    let message = status["message"].as_str().expect("a message");
    let expected = format!(
        "Internal error occurred: failed calling webhook \"down.eci.io\": failed to call webhook: Post \"https://127.0.0.1:{port}/validate?timeout=10s\": "
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.to_lowercase().contains("connection refused"), "{message}");
    assert!(exists(&cluster, Resource::Pods, Some("shop"), "web"));

    let ignore = json!({"webhooks": [{"name": "down.eci.io", "failurePolicy": "Ignore"}]});
    let (code, patched) = send_strategic_patch(
        &cluster,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/down",
        ignore,
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["webhooks"][0]["clientConfig"]["url"], url, "merged by name, not replaced");
    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/web", None).await;
    assert_eq!(code, 200, "{status}");
    assert!(!exists(&cluster, Resource::Pods, Some("shop"), "web"));
    cluster.shutdown().await.expect("stopped");
}

async fn send_strategic_patch(cluster: &SimCluster, path: &str, patch: Value) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    let response = client
        .patch(format!("{}{path}", cluster.url()))
        .header("Content-Type", "application/strategic-merge-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .expect("the cluster answers");
    let code = response.status().as_u16();
    (code, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_webhook_that_never_answers_is_given_up_on_at_its_timeout() {
    let authority = Authority::new("silent-ca");
    let receiver = Receiver::start(&authority, Behaviour::Silent).await;
    let cluster = cluster().await;
    let overrides = json!({"timeoutSeconds": 1});
    store_configuration(
        &cluster,
        configuration("slow", &receiver.url, &authority.ca_bundle(), deleting("", "pods"), overrides),
    );
    create_pod(&cluster, "shop", "web", json!({}));

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/web", None).await;
    assert_eq!(code, 500, "{status}");
    let message = status["message"].as_str().expect("a message");
    assert!(message.contains("failed calling webhook \"slow.eci.io\""), "{message}");
    assert!(message.contains("?timeout=1s\": context deadline exceeded"), "{message}");
    assert_eq!(receiver.reviews().len(), 1, "the call was made, and never answered");
    assert!(exists(&cluster, Resource::Pods, Some("shop"), "web"));
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test]
async fn a_webhook_is_trusted_only_through_its_own_ca_bundle() {
    let (right, wrong) = (Authority::new("right-ca"), Authority::new("wrong-ca"));
    let receiver = Receiver::start(&right, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    create_pod(&cluster, "shop", "web", json!({}));
    let service = json!({"clientConfig": {"service": {"namespace": "guard", "name": "webhook"}}});
    let no_bundle = json!({"clientConfig": {"url": receiver.url}});
    let cases = [
        (
            "wrong",
            json!({"clientConfig": {"url": receiver.url, "caBundle": wrong.ca_bundle()}}),
            "UnknownIssuer",
        ),
        ("service", service, "clientConfig.service guard/webhook cannot be reached"),
        ("unsigned", no_bundle, "clientConfig.caBundle is empty"),
    ];
    for (name, overrides, says) in cases {
        let stored = configuration(name, &receiver.url, "", deleting("", "pods"), overrides);
        store_configuration(&cluster, stored);
        let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/web", None).await;
        assert_eq!(code, 500, "{name}: {status}");
        let message = status["message"].as_str().expect("a message");
        assert!(message.contains(&format!("failed calling webhook \"{name}.eci.io\"")), "{message}");
        assert!(message.contains(says), "{name}: {message}");
        cluster.store().delete(Resource::ValidatingWebhookConfigurations, None, name, None).expect("removed");
    }
    assert!(receiver.reviews().is_empty(), "no review reached the receiver");
    assert!(exists(&cluster, Resource::Pods, Some("shop"), "web"));
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test]
async fn a_namespace_delete_is_reviewed_by_a_webhook_on_namespaces_before_anything_goes() {
    let authority = Authority::new("ns-ca");
    let receiver = Receiver::start(&authority, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    let overrides = json!({"rules": [{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["namespaces"], "scope": "Cluster"}]});
    store_configuration(
        &cluster,
        configuration("namespaces", &receiver.url, &authority.ca_bundle(), json!([]), overrides),
    );
    let vault = json!({"metadata": {"name": "vault", "labels": {"protected": "true"}}});
    cluster.store().create(Resource::Namespaces, None, vault).expect("vault");
    create_pod(&cluster, "vault", "secret-keeper", json!({"protected": "true"}));
    create_pod(&cluster, "shop", "web", json!({}));

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/vault", None).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "admission webhook \"namespaces.eci.io\" denied the request: this object is protected"
    );
    assert!(exists(&cluster, Resource::Namespaces, None, "vault"));
    assert!(exists(&cluster, Resource::Pods, Some("vault"), "secret-keeper"), "nothing in it went either");

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop", None).await;
    assert_eq!(code, 200, "{status}");
    assert!(!exists(&cluster, Resource::Namespaces, None, "shop"));
    assert!(
        !exists(&cluster, Resource::Pods, Some("shop"), "web"),
        "what was in it went with it, unreviewed"
    );

    let reviews = receiver.reviews();
    assert_eq!(reviews.len(), 2, "the namespaces only, not their pods: {reviews:#?}");
    let request = &reviews[0]["request"];
    assert_eq!(request["kind"], json!({"group": "", "version": "v1", "kind": "Namespace"}));
    assert_eq!(request["resource"]["resource"], "namespaces");
    assert_eq!(request["name"], "vault");
    assert_eq!(request["namespace"], "vault", "kube-apiserver names a namespace's own requests after it");
    assert_eq!(request["oldObject"]["metadata"]["labels"]["kubernetes.io/metadata.name"], "vault");
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test]
async fn a_vmi_delete_is_reviewed_by_a_webhook_on_kubevirt_resources() {
    let authority = Authority::new("vmi-ca");
    let receiver = Receiver::start(&authority, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    let rules = deleting("kubevirt.io", "virtualmachineinstances");
    store_configuration(
        &cluster,
        configuration("vmis", &receiver.url, &authority.ca_bundle(), rules, json!({})),
    );
    let vmi = json!({"metadata": {"name": "vm-1", "labels": {"protected": "true"}}, "spec": {}});
    cluster.store().create(Resource::VirtualMachineInstances, Some("shop"), vmi).expect("vmi");
    create_pod(&cluster, "shop", "web", json!({"protected": "true"}));

    let path = "/apis/kubevirt.io/v1/namespaces/shop/virtualmachineinstances/vm-1";
    let (code, status) = send(&cluster, "DELETE", path, None).await;
    assert_eq!(code, 403, "{status}");
    assert!(exists(&cluster, Resource::VirtualMachineInstances, Some("shop"), "vm-1"));
    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods/web", None).await;
    assert_eq!(code, 200, "the rules name VMIs only: {status}");
    let reviews = receiver.reviews();
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        reviews[0]["request"]["resource"],
        json!({"group": "kubevirt.io", "version": "v1", "resource": "virtualmachineinstances"})
    );
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test]
async fn a_deletecollection_of_pods_reviews_each_pod_and_keeps_the_refused_ones() {
    let authority = Authority::new("collection-ca");
    let receiver = Receiver::start(&authority, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    store_configuration(
        &cluster,
        configuration("guard", &receiver.url, &authority.ca_bundle(), deleting("", "pods"), json!({})),
    );
    create_pod(&cluster, "shop", "web-1", json!({"app": "web"}));
    create_pod(&cluster, "shop", "web-2", json!({"app": "web"}));
    create_pod(&cluster, "shop", "db", json!({"app": "db", "protected": "true"}));
    create_pod(&cluster, "shop", "cache", json!({"app": "cache"}));
    create_pod(&cluster, "default", "elsewhere", json!({"app": "web"}));

    let (code, list) =
        send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb", None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "PodList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    assert!(exists(&cluster, Resource::Pods, Some("default"), "elsewhere"), "one namespace only");

    let (code, status) = send(&cluster, "DELETE", "/api/v1/namespaces/shop/pods", None).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "admission webhook \"guard.eci.io\" denied the request: this object is protected"
    );
    assert!(exists(&cluster, Resource::Pods, Some("shop"), "db"), "the refused pod stays");
    assert!(!exists(&cluster, Resource::Pods, Some("shop"), "cache"), "the others go all the same");

    let reviewed: Vec<String> = receiver
        .reviews()
        .iter()
        .map(|r| r["request"]["name"].as_str().expect("a name").to_string())
        .collect();
    assert_eq!(reviewed, ["web-1", "web-2", "cache", "db"], "one review per pod");
    cluster.shutdown().await.expect("stopped");
}

/// Runs kubectl against `cluster` with a kubeconfig and discovery cache in `dir`, off the runtime's
/// worker threads (the cluster serves on them).
async fn kubectl(cluster: &SimCluster, dir: &std::path::Path, args: &[&str]) -> Output {
    std::fs::create_dir_all(dir.join("cache")).expect("a cache dir");
    std::fs::write(dir.join("kubeconfig"), cluster.kubeconfig()).expect("a kubeconfig");
    let mut command = Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("KUBECONFIG");
    tokio::task::spawn_blocking(move || command.output().expect("kubectl runs")).await.expect("joined")
}

fn printed(output: &Output) -> String {
    assert!(output.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_webhook_configuration_and_prints_the_webhooks_refusal() {
    if Command::new("kubectl").args(["version", "--client"]).output().is_err() {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("kubectl is not on the PATH: the kubectl tests need it (install the kubectl package)");
        }
        eprintln!("=== SKIPPED: kubectl is not on the PATH; the kubectl webhook test did not run ===");
        return;
    }
    let authority = Authority::new("kubectl-ca");
    let receiver = Receiver::start(&authority, Behaviour::DenyProtected).await;
    let cluster = cluster().await;
    let dir = std::env::temp_dir().join(format!("eci-edge-sim-admission-{}", std::process::id()));
    let manifest = |timeout: u32| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: guard\nwebhooks:\n- name: guard.eci.io\n  clientConfig:\n    url: {url}\n    caBundle: {ca}\n  rules:\n  - operations: [\"DELETE\"]\n    apiGroups: [\"\"]\n    apiVersions: [\"v1\"]\n    resources: [\"pods\"]\n  sideEffects: None\n  admissionReviewVersions: [\"v1\"]\n  timeoutSeconds: {timeout}\n",
            url = receiver.url,
            ca = authority.ca_bundle(),
        )
    };
    std::fs::create_dir_all(&dir).expect("a temp dir");
    std::fs::write(dir.join("guard.yaml"), manifest(5)).expect("a manifest");
    let created = printed(&kubectl(&cluster, &dir, &["apply", "-f", "guard.yaml"]).await);
    assert_eq!(created.trim(), "validatingwebhookconfiguration.admissionregistration.k8s.io/guard created");
    std::fs::write(dir.join("guard.yaml"), manifest(7)).expect("a manifest");
    let configured = printed(&kubectl(&cluster, &dir, &["apply", "-f", "guard.yaml"]).await);
    assert_eq!(
        configured.trim(),
        "validatingwebhookconfiguration.admissionregistration.k8s.io/guard configured"
    );
    let stored =
        cluster.store().get(Resource::ValidatingWebhookConfigurations, None, "guard").expect("stored");
    assert_eq!(stored["webhooks"][0]["timeoutSeconds"], 7);
    assert_eq!(stored["webhooks"][0]["clientConfig"]["url"], receiver.url.as_str());
    let listed = printed(&kubectl(&cluster, &dir, &["get", "validatingwebhookconfigurations"]).await);
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "WEBHOOKS", "AGE"], "{listed}");
    assert_eq!(rows[1][..2], ["guard", "1"], "{listed}");
    let named = printed(
        &kubectl(&cluster, &dir, &["get", "ns", "-l", "kubernetes.io/metadata.name=shop", "-o", "name"])
            .await,
    );
    assert_eq!(named.trim(), "namespace/shop");

    create_pod(&cluster, "shop", "keep", json!({"protected": "true"}));
    create_pod(&cluster, "shop", "drop", json!({}));
    let refused = kubectl(&cluster, &dir, &["delete", "pod", "keep", "-n", "shop"]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("admission webhook \"guard.eci.io\" denied the request: this object is protected"),
        "{stderr}"
    );
    let all = kubectl(&cluster, &dir, &["delete", "pods", "--all", "-n", "shop"]).await;
    assert!(String::from_utf8_lossy(&all.stdout).contains("pod \"drop\" deleted"), "{all:?}");
    assert!(
        String::from_utf8_lossy(&all.stderr).contains("denied the request: this object is protected"),
        "{all:?}"
    );
    assert!(exists(&cluster, Resource::Pods, Some("shop"), "keep"));
    assert!(!exists(&cluster, Resource::Pods, Some("shop"), "drop"));
    let _ = std::fs::remove_dir_all(&dir);
    cluster.shutdown().await.expect("stopped");
}
