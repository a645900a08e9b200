//! Fault injection: make a cluster behave like an edge IDC whose link is down, hanging or slow.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What the link to the cluster does to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Requests are served normally.
    #[default]
    None,
    /// Requests fail at once, as when the IDC cannot be reached. The server answers 503 with
    /// `Connection: close` and no body: clients see a failure at once, never an object.
    Unreachable,
    /// Requests are accepted and never answered: only a client-side timeout ends them.
    BlackHole,
    /// Every answer is delayed this long.
    Slow(Duration),
}

/// The fault in force, shared by the cluster handle and its server.
pub type FaultSwitch = Arc<RwLock<Fault>>;

/// Applies the fault in force to a request.
pub async fn inject(State(fault): State<FaultSwitch>, request: Request, next: Next) -> Response {
    let current = *fault.read().expect("fault lock poisoned");
    match current {
        Fault::None => next.run(request).await,
        Fault::Unreachable => unreachable_response(),
        Fault::BlackHole => std::future::pending().await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
    }
}

fn unreachable_response() -> Response {
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::CONNECTION, "close")]).into_response()
}
