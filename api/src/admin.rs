//! `/v1/admin/...`: tenants, their keys and quotas, and the fleet's IDCs. Admin keys only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use eci_core::{Area, Carrier, Idc, IdcId, IdcStatus, KeyId, Runtime, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Admin, new_secret};
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path};
use crate::wire::{QuotaBody, SpecBody, TenantView};

/// The routes of `/v1/admin/...`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tenants", get(list_tenants).post(create_tenant))
        .route("/v1/admin/tenants/{id}", get(get_tenant))
        .route("/v1/admin/tenants/{id}/quota", put(set_quota))
        .route("/v1/admin/tenants/{id}/keys", get(list_keys).post(create_key))
        .route("/v1/admin/keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/admin/idcs", get(list_idcs))
        .route("/v1/admin/idcs/{id}", put(put_idc).get(get_idc))
        .route("/v1/admin/idcs/{id}/drain", post(drain_idc))
}

/// A new tenant (`POST /v1/admin/tenants`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Unique account name, 1 to 128 characters; surrounding spaces are trimmed.
    pub name: String,
    /// Its limits; unlimited when left out.
    #[serde(default)]
    pub quota: QuotaBody,
}

/// Create a tenant with a unique name and, optionally, a quota.
#[utoipa::path(post, path = "/v1/admin/tenants", request_body = CreateTenantBody,
    responses((status = 201, body = TenantView), (status = 409)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body<CreateTenantBody>,
) -> Result<(StatusCode, Json<TenantView>)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
    }
    let tenant = state.store.create_tenant(name, body.quota.to_quota()?, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(TenantView::from(&tenant))))
}

/// List every tenant, in id order, with what its live instances use.
#[utoipa::path(get, path = "/v1/admin/tenants", responses((status = 200, body = Vec<TenantView>)))]
pub async fn list_tenants(State(state): State<AppState>, _admin: Admin) -> Result<Json<Vec<TenantView>>> {
    Ok(Json(state.store.list_tenants().await?.iter().map(TenantView::from).collect()))
}

/// Get one tenant, with its quota and what its live instances use.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}",
    params(("id" = String, Path, description = "The tenant's id (`t-...`).")),
    responses((status = 200, body = TenantView), (status = 404)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    Ok(Json(TenantView::from(&state.store.get_tenant(&TenantId(id)).await?)))
}

/// Replace a tenant's quota; limits left out become unlimited. Lowering a limit below what the
/// tenant uses refuses new work and ends nothing.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/quota",
    params(("id" = String, Path, description = "The tenant's id (`t-...`).")), request_body = QuotaBody,
    responses((status = 200, body = TenantView), (status = 404)))]
pub async fn set_quota(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<QuotaBody>,
) -> Result<Json<TenantView>> {
    let tenant = state.store.set_quota(&TenantId(id), body.to_quota()?).await?;
    // Cached callers carry the old request rate.
    state.principals.invalidate_all();
    Ok(Json(TenantView::from(&tenant)))
}

/// A new API key for a tenant (`POST /v1/admin/tenants/{id}/keys`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// What the key is for, shown in listings.
    #[serde(default)]
    pub name: String,
}

/// An API key; `secret` is only ever shown in the answer that creates it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Key id, starting `k-`; what `DELETE /v1/admin/keys/{id}` takes.
    pub id: String,
    /// The tenant the key acts for, starting `t-`; null for an admin key.
    pub tenant_id: Option<String>,
    /// True for an admin key, which may call `/v1/admin/...`.
    pub admin: bool,
    /// What the key is for, as its creator named it.
    pub name: String,
    /// The secret to send as `Authorization: Bearer <secret>`; present only in the answer that creates
    /// the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the key was created, UTC RFC 3339.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the key was revoked, UTC RFC 3339; null while it is valid.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyView {
    fn new(k: &eci_store::tenants::ApiKey, secret: Option<String>) -> Self {
        KeyView {
            id: k.id.0.clone(),
            tenant_id: k.tenant_id.as_ref().map(|t| t.0.clone()),
            admin: k.admin,
            name: k.name.clone(),
            secret,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// Create an API key for a tenant. Its secret is in this answer only and can never be shown again.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/keys",
    params(("id" = String, Path, description = "The tenant's id (`t-...`).")), request_body = CreateKeyBody,
    responses((status = 201, body = KeyView), (status = 404)))]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<CreateKeyBody>,
) -> Result<(StatusCode, Json<KeyView>)> {
    let secret = new_secret();
    let key =
        state.store.create_key(Some(&TenantId(id)), false, &body.name, &secret, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(KeyView::new(&key, Some(secret)))))
}

/// List a tenant's API keys in id order, revoked ones included; secrets are never shown.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/keys",
    params(("id" = String, Path, description = "The tenant's id (`t-...`).")),
    responses((status = 200, body = Vec<KeyView>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Vec<KeyView>>> {
    let tenant = TenantId(id);
    state.store.get_tenant(&tenant).await?;
    Ok(Json(state.store.list_keys(Some(&tenant)).await?.iter().map(|k| KeyView::new(k, None)).collect()))
}

/// Revoke an API key: within seconds, every request made with it is refused. An admin key cannot
/// revoke itself (`409 self_revocation`).
#[utoipa::path(delete, path = "/v1/admin/keys/{id}",
    params(("id" = String, Path, description = "The key's id (`k-...`).")),
    responses((status = 204), (status = 404)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    if admin.key_id.0 == id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self_revocation",
            "an admin key cannot revoke itself",
        ));
    }
    state.store.revoke_key(&KeyId(id), state.clock.now()).await?;
    state.principals.invalidate_all();
    Ok(StatusCode::NO_CONTENT)
}

/// An IDC as admins describe and see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdcBody {
    /// Shown to operators only; the IDC id when empty.
    #[serde(default)]
    pub name: String,
    /// Region code: lowercase pinyin words joined by `-`, such as `south-china`.
    pub region: String,
    /// Province code within the region, such as `guangdong`.
    pub province: String,
    /// City code within the province, such as `shenzhen`.
    pub city: String,
    /// ISPs the IDC is connected to, at least one: `telecom`, `unicom`, `mobile` or `bgp` (multi-line).
    pub carriers: Vec<String>,
    /// What the platform may allocate there in total, across all servers.
    pub capacity: SpecBody,
    /// Runtimes its cluster runs: `container` (always; added when left out), `rich`, `vm`.
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// `active` (default), `draining` or `disconnected`.
    pub status: Option<String>,
    /// The kubeconfig context naming the IDC's Kubernetes cluster.
    pub kube_context: Option<String>,
    /// `runtimeClassName` of rich containers there (the platform's default, `kata`, when absent).
    pub rich_runtime_class: Option<String>,
    /// The address the IDC's ssh NodePorts are reached at from outside (its NAT or load balancer);
    /// the nodes' own addresses when absent.
    pub ssh_ingress_host: Option<String>,
}

/// An IDC's description with its capacity ledger: what is reserved, allocated and free.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdcView {
    /// IDC id, chosen by admins: letters, digits, `-` and `_`.
    pub id: String,
    /// The IDC's description, as last set.
    #[serde(flatten)]
    pub idc: IdcBody,
    /// Held for reservations and not yet drawn on.
    pub reserved: SpecBody,
    /// Taken by live instances, including those drawn from reservations.
    pub allocated: SpecBody,
    /// What new instances and reservations may still take.
    pub free: SpecBody,
}

fn idc_view(idc: &Idc, line: &eci_core::IdcLedger) -> IdcView {
    IdcView {
        id: idc.id.0.clone(),
        idc: IdcBody {
            name: idc.name.clone(),
            region: idc.area.region.clone(),
            province: idc.area.province.clone(),
            city: idc.area.city.clone(),
            carriers: idc.carriers.iter().map(|c| c.to_string()).collect(),
            capacity: SpecBody::from_resources(&idc.capacity),
            runtimes: idc.runtimes.iter().map(|r| r.to_string()).collect(),
            status: Some(idc.status.to_string()),
            kube_context: idc.kube_context.clone(),
            rich_runtime_class: idc.rich_runtime_class.clone(),
            ssh_ingress_host: idc.ssh_ingress_host.clone(),
        },
        reserved: SpecBody::from_resources(&line.reserved),
        allocated: SpecBody::from_resources(&line.allocated),
        free: SpecBody::from_resources(&line.free()),
    }
}

/// List every IDC, in id order, with what is reserved, allocated and free in it.
#[utoipa::path(get, path = "/v1/admin/idcs", responses((status = 200, body = Vec<IdcView>)))]
pub async fn list_idcs(State(state): State<AppState>, _admin: Admin) -> Result<Json<Vec<IdcView>>> {
    Ok(Json(state.store.list_idcs().await?.iter().map(|(i, l)| idc_view(i, l)).collect()))
}

/// Get one IDC, with what is reserved, allocated and free in it.
#[utoipa::path(get, path = "/v1/admin/idcs/{id}",
    params(("id" = String, Path, description = "The IDC's id.")),
    responses((status = 200, body = IdcView), (status = 404)))]
pub async fn get_idc(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<IdcView>> {
    let (idc, line) = state.store.get_idc(&IdcId(id)).await?;
    Ok(Json(idc_view(&idc, &line)))
}

/// Add an IDC or change one. Its area codes must not clash with the fleet's.
#[utoipa::path(put, path = "/v1/admin/idcs/{id}",
    params(("id" = String, Path, description = "The IDC's id.")), request_body = IdcBody,
    responses((status = 200, body = IdcView), (status = 400)))]
pub async fn put_idc(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<IdcBody>,
) -> Result<Json<IdcView>> {
    let mut runtimes = body
        .runtimes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.parse::<Runtime>().map_err(|e| ApiError::invalid(&format!("runtimes[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    if !runtimes.contains(&Runtime::Container) {
        runtimes.insert(0, Runtime::Container);
    }
    let idc = Idc {
        id: IdcId(id.clone()),
        name: if body.name.is_empty() { id.clone() } else { body.name.clone() },
        area: Area::new(&body.region, &body.province, &body.city),
        carriers: body
            .carriers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.parse::<Carrier>().map_err(|e| ApiError::invalid(&format!("carriers[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?,
        capacity: body.capacity.to_resources("capacity")?,
        runtimes,
        status: body
            .status
            .as_deref()
            .map(|s| s.parse::<IdcStatus>().map_err(|e| ApiError::invalid("status", e.to_string())))
            .transpose()?
            .unwrap_or_default(),
        kube_context: body.kube_context.clone(),
        rich_runtime_class: body.rich_runtime_class.clone(),
        ssh_ingress_host: body.ssh_ingress_host.clone(),
    };
    idc.validate().map_err(|e| ApiError::invalid("idc", e.to_string()))?;
    let mut fleet = state.store.snapshot().await?.fleet;
    fleet.idcs.retain(|i| i.id != idc.id);
    fleet.idcs.push(idc.clone());
    eci_core::fleet::check_area_codes(fleet.idcs.iter().map(|i| &i.area))
        .map_err(|e| ApiError::invalid("area", e.to_string()))?;
    state.store.upsert_idc(&idc, state.clock.now()).await?;
    let (idc, line) = state.store.get_idc(&idc.id).await?;
    Ok(Json(idc_view(&idc, &line)))
}

/// Stop placing new instances in an IDC; what runs there keeps running.
#[utoipa::path(post, path = "/v1/admin/idcs/{id}/drain",
    params(("id" = String, Path, description = "The IDC's id.")),
    responses((status = 200, body = IdcView), (status = 404)))]
pub async fn drain_idc(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<IdcView>> {
    let id = IdcId(id);
    state.store.set_idc_status(&id, IdcStatus::Draining, state.clock.now()).await?;
    let (idc, line) = state.store.get_idc(&id).await?;
    Ok(Json(idc_view(&idc, &line)))
}
