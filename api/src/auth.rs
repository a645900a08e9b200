//! Who is calling: API keys to tenants (or admins), and each tenant's request rate.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use eci_core::{KeyId, Tenant};
use eci_store::coordination::RateVerdict;
use eci_store::tenants::Principal;

use crate::AppState;
use crate::error::{ApiError, Result};

/// A tenant's request, authenticated and within its rate.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant the key acts for, as loaded when the key was checked.
    pub tenant: Tenant,
    /// The key the request was made with.
    pub key_id: KeyId,
}

/// An admin's request.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin key the request was made with.
    pub key_id: KeyId,
}

fn bearer(parts: &Parts) -> Result<&str> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <api key>` header"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <api key>`"))
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal> {
    let secret = bearer(parts)?;
    let hash = eci_store::tenants::hash_key(secret);
    if let Some(principal) = state.principals.get(&hash) {
        return Ok(principal);
    }
    let principal = state
        .store
        .authenticate(secret)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
    state.principals.insert(hash, principal.clone());
    Ok(principal)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let principal = principal(parts, state).await?;
        let Some(tenant) = principal.tenant else {
            return Err(ApiError::forbidden("this endpoint acts for a tenant; use a tenant's API key"));
        };
        let limit = tenant.quota.requests_per_second.unwrap_or(state.config.default_requests_per_second);
        let now_ms = u64::try_from(state.clock.now().timestamp_millis()).unwrap_or(0);
        match state.rate.hit(&tenant.id.0, u64::from(limit), Duration::from_secs(1), now_ms).await {
            Ok(RateVerdict::Allowed) => {}
            Ok(RateVerdict::Limited { retry_after }) => {
                let message = format!("more than {limit} requests per second; slow down");
                return Err(ApiError::rate_limited(message, u64::from(limit), retry_after));
            }
            // A coordination outage must not take the API down with it: fail open, loudly.
            Err(error) => tracing::warn!(error = ?error, "rate window unavailable; request let through"),
        }
        Ok(Caller { tenant, key_id: principal.key_id })
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let principal = principal(parts, state).await?;
        if !principal.admin {
            return Err(ApiError::forbidden("this endpoint needs an admin API key"));
        }
        Ok(Admin { key_id: principal.key_id })
    }
}

/// A new API key secret: 32 random bytes, printable, with a prefix that makes a leaked key easy to
/// find in logs and code.
pub fn new_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    format!("eci_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A request with any valid key: a tenant's (within its rate), or an admin's, for the endpoints
/// both may read (each seeing what is theirs).
#[derive(Debug, Clone)]
pub enum Anyone {
    /// A tenant's key.
    Tenant(Caller),
    /// An admin's key.
    Admin(Admin),
}

impl Anyone {
    /// The tenant whose records the caller may see; `None` for an admin, who sees everyone's.
    pub fn tenant(&self) -> Option<&eci_core::TenantId> {
        match self {
            Anyone::Tenant(caller) => Some(&caller.tenant.id),
            Anyone::Admin(_) => None,
        }
    }
}

impl FromRequestParts<AppState> for Anyone {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if principal(parts, state).await?.admin {
            return Ok(Anyone::Admin(Admin::from_request_parts(parts, state).await?));
        }
        Ok(Anyone::Tenant(Caller::from_request_parts(parts, state).await?))
    }
}
