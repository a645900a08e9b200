//! API benchmarks through the real router (no socket), on SQLite and, when reachable, PostgreSQL:
//! - `POST /v1/batches` of 1,000 instances, end to end (placement, ledger, 1,000 rows);
//! - `GET /v1/instances/{id}` sustained throughput with concurrent callers.
//!
//! `cargo run --release -p eci-bench --bin api`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use eci_api::{ApiConfig, AppState};
use eci_core::{Fleet, Quota, SystemClock};
use eci_store::Store;
use eci_store::coordination::RateWindows;
use eci_store::testing;
use http_body_util::BodyExt;
use tower::ServiceExt;

const POST_ITERATIONS: usize = 40;
const GET_CONCURRENCY: usize = 32;
const GET_DURATION: Duration = Duration::from_secs(5);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The built-in fleet made ten times bigger, so that batches never run short of room.
fn roomy_fleet() -> Fleet {
    let mut fleet = eci_core::builtin::builtin_fleet();
    for idc in &mut fleet.idcs {
        idc.capacity = idc.capacity * 10;
    }
    fleet
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<&str>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty))?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes)? }))
}

async fn bench(name: &str, store: Store) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    testing::seed_fleet(&store, &roomy_fleet()).await;
    let tenant = store
        .create_tenant("bench", Quota { requests_per_second: Some(10_000_000), ..Quota::default() }, now)
        .await?;
    let token = "eci_bench_token";
    store.create_key(Some(&tenant.id), false, "bench", token, now).await?;
    let state = AppState::new(store, RateWindows::in_process(), Arc::new(SystemClock), ApiConfig::default());
    let app = eci_api::router(state);

    let body = r#"{"count":1000,"spec":{"cpu":"2","memory":"4Gi"},"image":"nginx:1.27",
        "placement":{"areas":["guangdong"],"carriers":["telecom"]}}"#;
    let mut post_ms = Vec::with_capacity(POST_ITERATIONS);
    let mut instance_id = String::new();
    for i in 0..POST_ITERATIONS + 3 {
        let started = Instant::now();
        let (status, batch) = call(&app, "POST", "/v1/batches", token, Some(body)).await?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        if status != StatusCode::ACCEPTED {
            bail!("POST /v1/batches answered {status}: {batch}");
        }
        let id = batch["id"].as_str().context("batch id")?;
        if i >= 3 {
            post_ms.push(elapsed);
        }
        if i == POST_ITERATIONS + 2 {
            let (_, page) =
                call(&app, "GET", &format!("/v1/batches/{id}/instances?limit=1"), token, None).await?;
            instance_id = page["items"][0]["id"].as_str().context("instance id")?.to_string();
        } else {
            call(&app, "DELETE", &format!("/v1/batches/{id}"), token, None).await?;
        }
    }
    post_ms.sort_by(f64::total_cmp);
    println!(
        "{name:<10} POST /v1/batches (1000 instances)  median {:7.2} ms  p99 {:7.2} ms  min {:7.2} ms  ({} runs)",
        percentile(&post_ms, 0.5),
        percentile(&post_ms, 0.99),
        post_ms[0],
        post_ms.len()
    );

    let uri = format!("/v1/instances/{instance_id}");
    let deadline = Instant::now() + GET_DURATION;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..GET_CONCURRENCY {
        let (app, uri) = (app.clone(), uri.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (status, _) = call(&app, "GET", &uri, token, None).await?;
                if status != StatusCode::OK {
                    bail!("GET {uri} answered {status}");
                }
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name:<10} GET /v1/instances/{{id}}            {:9.0} requests/s  ({total} requests, {GET_CONCURRENCY} concurrent, {secs:.1} s)",
        total as f64 / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (sqlite, _dir) = testing::sqlite_store_with(8).await;
    bench("sqlite", sqlite).await?;
    match testing::postgres_database(16).await {
        Some(db) => {
            bench("postgres", db.store.clone()).await?;
            db.cleanup().await;
        }
        None => println!("postgres   skipped: server not reachable"),
    }
    Ok(())
}
