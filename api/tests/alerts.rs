//! Alerts reach a local webhook receiver as Alertmanager would post them, retried when the receiver
//! fails: a tripped deletion breaker, an instance whose Pod vanished, an IDC that turned
//! disconnected (once, however often it is found unreachable), and a refused out-of-band deletion;
//! each is also counted in `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use eci_api::alerts::AlertConfig;
use eci_api::testing::*;
use eci_core::lifecycle::Observed;
use eci_core::{IdcId, InstanceId};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A receiver that fails its first answer with 503, then takes every alert and hands it on.
#[derive(Clone)]
struct Receiver {
    answered: Arc<Mutex<u32>>,
    alerts: mpsc::UnboundedSender<Value>,
}

async fn receive(State(receiver): State<Receiver>, axum::Json(message): axum::Json<Value>) -> StatusCode {
    let first = {
        let mut answered = receiver.answered.lock().unwrap();
        *answered += 1;
        *answered == 1
    };
    if first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    receiver.alerts.send(message).unwrap();
    StatusCode::OK
}

async fn start_receiver() -> (String, mpsc::UnboundedReceiver<Value>, Arc<Mutex<u32>>) {
    let (alerts, received) = mpsc::unbounded_channel();
    let answered = Arc::new(Mutex::new(0));
    let app = Router::new()
        .route("/alerts", post(receive))
        .with_state(Receiver { answered: answered.clone(), alerts });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, answered)
}

/// The next alert the receiver took; a guard against a hang, not a bound on how fast it comes.
async fn next(received: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(60), received.recv())
        .await
        .expect("an alert reaches the receiver")
        .expect("the receiver runs")
}

#[tokio::test]
async fn alerts_reach_a_webhook_receiver_as_alertmanager_posts_them() {
    each_backend(|store| async move {
        let (url, mut received, answered) = start_receiver().await;
        let app = App::seeded(store).await;
        let config = AlertConfig {
            receivers: vec![url.parse().unwrap()],
            external_url: "http://eci.example:7070".into(),
            first_retry: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..AlertConfig::default()
        };
        let state = app.state.clone().raising_alerts(config);
        let router = eci_api::router(state.clone());
        let mut rules = app.get("/v1/risk/rules", ADMIN).await.expect_status(StatusCode::OK)["rules"].clone();
        rules["per_tenant"] = json!({ "deletions": 2, "window_seconds": 300 });
        app.put("/v1/admin/risk/rules", ADMIN, rules).await.expect_status(StatusCode::OK);
        let t = app.tenant("acme").await;
        let b = app.create_batch(&t.token, batch(4)).await;
        let instances = ids(&app
            .all_pages(&format!("/v1/batches/{}/instances", b["id"].as_str().unwrap()), &t.token)
            .await);

        // The breaker trips on the third deletion: the receiver's first answer fails, the retry lands.
        for id in &instances[..2] {
            send(&router, Method::DELETE, &format!("/v1/instances/{id}"), Some(&t.token), None)
                .await
                .expect_status(StatusCode::OK);
        }
        let refused =
            send(&router, Method::DELETE, &format!("/v1/instances/{}", instances[2]), Some(&t.token), None)
                .await;
        assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited");
        let message = next(&mut received).await;
        assert_eq!(*answered.lock().unwrap(), 2, "delivered on the second attempt");
        assert_eq!((message["version"].as_str(), message["status"].as_str()), (Some("4"), Some("firing")));
        assert_eq!(message["receiver"], "eci");
        assert_eq!(message["groupLabels"], json!({ "alertname": "EciDeletionBreakerTripped" }));
        let alert = &message["alerts"][0];
        assert_eq!(alert["labels"]["breaker"], format!("tenant:{}", t.id).as_str());
        assert_eq!(alert["labels"]["severity"], "critical");
        assert_eq!(alert["status"], "firing");
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
        assert!(alert["fingerprint"].as_str().is_some_and(|f| f.len() == 16), "{alert}");
        assert!(
            alert["annotations"]["summary"].as_str().unwrap().contains("eci admin risk reset"),
            "{alert}"
        );
        assert!(alert["generatorURL"].as_str().unwrap().starts_with("http://eci.example:7070/"), "{alert}");
        let again =
            send(&router, Method::DELETE, &format!("/v1/instances/{}", instances[2]), Some(&t.token), None)
                .await;
        assert_error(&again, StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited");

        // The cluster reports a live instance's Pod gone.
        let vanished = InstanceId(instances[3].clone());
        let now = app.clock_now();
        state.store.record_observation(&vanished, &Observed::Gone, now).await.unwrap();
        let message = next(&mut received).await;
        let alert = &message["alerts"][0];
        assert_eq!(
            alert["labels"]["alertname"], "EciInstanceVanished",
            "an open breaker alerts once: {message}"
        );
        assert_eq!(alert["labels"]["instance"], vanished.0.as_str());
        assert_eq!(alert["labels"]["tenant"], t.id.as_str());

        // An IDC found unreachable turns disconnected once: one alert, however many passes find it so.
        let idc = IdcId(IDC_IDS[0].to_string());
        for _ in 0..3 {
            state.store.mark_idc_disconnected(&idc, now).await.unwrap();
        }
        let message = next(&mut received).await;
        let alert = &message["alerts"][0];
        assert_eq!(
            (alert["labels"]["alertname"].as_str(), alert["labels"]["idc"].as_str()),
            (Some("EciIdcDisconnected"), Some(IDC_IDS[0]))
        );
        assert_eq!(
            alert["generatorURL"],
            format!("http://eci.example:7070/v1/admin/idcs/{}", IDC_IDS[0]).as_str()
        );

        // Someone's kubectl, refused by the deletion guard.
        let b2 = app.create_batch(&t.token, batch(1)).await;
        let one = &app
            .all_pages(&format!("/v1/batches/{}/instances", b2["id"].as_str().unwrap()), &t.token)
            .await[0];
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": "DELETE", "name": "p",
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "userInfo": {"username": "kubernetes-admin"},
                "oldObject": {"metadata": {"name": "p", "labels": {"eci.io/instance": one["id"]}}}}
        });
        let guard = eci_api::admission::router(state.clone());
        let idc_of = one["idc"].as_str().unwrap();
        let answer =
            send(&guard, Method::POST, &format!("/admission/idcs/{idc_of}"), None, Some(review)).await;
        assert_eq!(answer.expect_status(StatusCode::OK)["response"]["allowed"], false);
        let message = next(&mut received).await;
        let alert = &message["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "EciOutOfBandDeletionDenied");
        assert_eq!(
            (alert["labels"]["subject"].as_str(), alert["labels"]["idc"].as_str()),
            (Some("kubernetes-admin"), Some(idc_of))
        );

        // The receiver hands an alert on before its answer reaches the platform, which counts the
        // delivery then.
        let delivered = "eci_alert_deliveries_total{outcome=\"delivered\"} 4";
        let mut metrics = String::new();
        for _ in 0..12_000 {
            let (_, text, _) = send(&router, Method::GET, "/metrics", None, None).await;
            metrics = text.as_str().unwrap().to_string();
            if metrics.contains(delivered) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for line in [
            "eci_alerts_total{alert=\"breaker_tripped\",idc=\"\"} 1".to_string(),
            "eci_alerts_total{alert=\"instance_vanished\"".to_string(),
            format!("eci_alerts_total{{alert=\"idc_disconnected\",idc=\"{}\"}} 1", IDC_IDS[0]),
            delivered.to_string(),
        ] {
            assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
        }
        assert!(received.try_recv().is_err(), "nothing more was raised");
    })
    .await;
}
