//! Fault injection: make a cluster behave like an edge IDC whose link is down, hanging, slow or
//! flapping. Set from code (`SimCluster::set_fault`) or over HTTP (`PUT /sim/fault`, which no fault
//! affects, so a black-holed cluster can still be healed).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::put};
use serde::Deserialize;

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
    /// The link is up for `period`, then unreachable for `period`, and so on.
    Flapping(Duration),
}

/// The fault in force and when it was set (flapping counts its periods from then).
#[derive(Debug, Clone, Copy)]
struct Setting {
    fault: Fault,
    since: Instant,
}

/// The fault switch shared by the cluster handle and its server.
#[derive(Debug, Clone)]
pub struct FaultSwitch(Arc<RwLock<Setting>>, Arc<tokio::sync::watch::Sender<Fault>>);

impl Default for FaultSwitch {
    fn default() -> Self {
        FaultSwitch(
            Arc::new(RwLock::new(Setting { fault: Fault::None, since: Instant::now() })),
            Arc::new(tokio::sync::watch::Sender::new(Fault::None)),
        )
    }
}

impl FaultSwitch {
    pub fn set(&self, fault: Fault) {
        *self.0.write().expect("fault lock poisoned") = Setting { fault, since: Instant::now() };
        self.1.send_replace(fault);
    }

    /// Follows the fault setting, for streams that outlive a request (watches).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Fault> {
        self.1.subscribe()
    }

    pub fn get(&self) -> Fault {
        self.0.read().expect("fault lock poisoned").fault
    }

    /// What a request arriving at `now` meets: a flapping link resolves to up or down.
    fn effective(&self, now: Instant) -> Fault {
        let setting = *self.0.read().expect("fault lock poisoned");
        match setting.fault {
            Fault::Flapping(period) => {
                let periods = now.duration_since(setting.since).as_nanos() / period.as_nanos().max(1);
                if periods.is_multiple_of(2) { Fault::None } else { Fault::Unreachable }
            }
            other => other,
        }
    }
}

/// Applies the fault in force to a request.
pub async fn inject(State(switch): State<FaultSwitch>, request: Request, next: Next) -> Response {
    match switch.effective(Instant::now()) {
        Fault::None | Fault::Flapping(_) => next.run(request).await,
        Fault::Unreachable => {
            (StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::CONNECTION, "close")]).into_response()
        }
        Fault::BlackHole => std::future::pending().await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
    }
}

/// `PUT /sim/fault` body: `{"fault": "none|unreachable|black_hole|slow|flapping", "millis": 500}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    fault: String,
    /// The delay of `slow`, the period of `flapping`.
    millis: Option<u64>,
}

impl FaultBody {
    fn to_fault(&self) -> Result<Fault, String> {
        let millis = || {
            self.millis
                .filter(|m| *m > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("`{}` needs `millis` > 0", self.fault))
        };
        match self.fault.as_str() {
            "none" => Ok(Fault::None),
            "unreachable" => Ok(Fault::Unreachable),
            "black_hole" => Ok(Fault::BlackHole),
            "slow" => Ok(Fault::Slow(millis()?)),
            "flapping" => Ok(Fault::Flapping(millis()?)),
            other => Err(format!("unknown fault `{other}`: none, unreachable, black_hole, slow or flapping")),
        }
    }
}

/// The admin routes, to be merged outside the fault layer.
pub fn admin_router(switch: FaultSwitch) -> Router {
    Router::new()
        .route(
            "/sim/fault",
            put(|State(switch): State<FaultSwitch>, Json(body): Json<FaultBody>| async move {
                match body.to_fault() {
                    Ok(fault) => {
                        switch.set(fault);
                        tracing::info!(?fault, "fault injected");
                        StatusCode::NO_CONTENT.into_response()
                    }
                    Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
                }
            }),
        )
        .with_state(switch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_link_alternates_between_up_and_down_each_period() {
        let switch = FaultSwitch::default();
        switch.set(Fault::Flapping(Duration::from_secs(10)));
        let since = switch.0.read().unwrap().since;
        let at = |secs: u64| switch.effective(since + Duration::from_secs(secs));
        assert_eq!(at(0), Fault::None);
        assert_eq!(at(9), Fault::None);
        assert_eq!(at(10), Fault::Unreachable);
        assert_eq!(at(19), Fault::Unreachable);
        assert_eq!(at(20), Fault::None);
        assert_eq!(switch.get(), Fault::Flapping(Duration::from_secs(10)));
    }

    #[test]
    fn fault_bodies_are_read_or_refused_with_a_reason() {
        let body = |fault: &str, millis: Option<u64>| FaultBody { fault: fault.into(), millis };
        assert_eq!(body("black_hole", None).to_fault(), Ok(Fault::BlackHole));
        assert_eq!(body("slow", Some(250)).to_fault(), Ok(Fault::Slow(Duration::from_millis(250))));
        assert!(body("slow", None).to_fault().is_err());
        assert!(body("flapping", Some(0)).to_fault().is_err());
        assert!(body("cut", None).to_fault().unwrap_err().contains("unknown fault"));
    }
}
