//! `/v1/admin/...`: tenants, their keys and quotas, and the fleet's IDCs. Admin keys only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use eci_core::capacity::{CapacityShort, ClusterCapacity, MAX_HEADROOM_PERCENT};
use eci_core::{Area, Carrier, Idc, IdcId, IdcStatus, KeyId, Runtime, TenantId};
use eci_store::fleet::IdcReport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Admin, new_secret};
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path};
use crate::openapi::{AdminCall, Conflict, JsonBody, NotFound};
use crate::wire::rules::{self, TextRule};
use crate::wire::{
    AmountView, QuotaBody, SpecBody, TenantView, optional_word_schema, whole, word_list_schema, word_schema,
};

routes! { router, ROUTES;
    "/v1/admin/tenants" => get(list_tenants).post(create_tenant);
    "/v1/admin/tenants/{id}" => get(get_tenant);
    "/v1/admin/tenants/{id}/quota" => put(set_quota);
    "/v1/admin/tenants/{id}/keys" => get(list_keys).post(create_key);
    "/v1/admin/keys/{id}" => delete(revoke_key);
    "/v1/admin/idcs" => get(list_idcs);
    "/v1/admin/idcs/{id}" => put(put_idc).get(get_idc);
    "/v1/admin/idcs/{id}/drain" => post(drain_idc);
}

/// A new tenant (`POST /v1/admin/tenants`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Unique account name.
    #[schema(value_type = rules::TenantName)]
    pub name: String,
    /// Its limits; unlimited when left out.
    #[serde(default)]
    pub quota: QuotaBody,
}

/// Create a tenant with a unique name and, optionally, a quota.
#[utoipa::path(post, path = "/v1/admin/tenants", request_body = CreateTenantBody,
    responses((status = 201, body = TenantView), AdminCall, JsonBody, (status = 409, response = Conflict)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body<CreateTenantBody>,
) -> Result<(StatusCode, Json<TenantView>)> {
    rules::TenantName::require("name", &body.name)?;
    let quota = body.quota.to_quota()?;
    let tenant = state.store.create_tenant(&body.name, quota, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(TenantView::from(&tenant))))
}

/// List every tenant, in id order, with what its live instances use.
#[utoipa::path(get, path = "/v1/admin/tenants", responses((status = 200, body = Vec<TenantView>), AdminCall))]
pub async fn list_tenants(State(state): State<AppState>, _admin: Admin) -> Result<Json<Vec<TenantView>>> {
    Ok(Json(state.store.list_tenants().await?.iter().map(TenantView::from).collect()))
}

/// Get one tenant, with its quota and what its live instances use.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}",
    params(("id" = rules::TenantIdText, Path, description = "The tenant's id (`t-...`).")),
    responses((status = 200, body = TenantView), AdminCall, (status = 404, response = NotFound)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<TenantView>> {
    let id = rules::known_id::<rules::TenantIdText>("tenant", id)?;
    Ok(Json(TenantView::from(&state.store.get_tenant(&TenantId(id)).await?)))
}

/// Replace a tenant's quota; limits left out become unlimited. Lowering a limit below what the
/// tenant uses refuses new work and ends nothing.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/quota",
    params(("id" = rules::TenantIdText, Path, description = "The tenant's id (`t-...`).")),
    request_body = QuotaBody,
    responses((status = 200, body = TenantView), AdminCall, JsonBody, (status = 404, response = NotFound)))]
pub async fn set_quota(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<QuotaBody>,
) -> Result<Json<TenantView>> {
    let quota = body.to_quota()?;
    let id = rules::known_id::<rules::TenantIdText>("tenant", id)?;
    let tenant = state.store.set_quota(&TenantId(id), quota).await?;
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
    #[schema(value_type = rules::Label128)]
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
    params(("id" = rules::TenantIdText, Path, description = "The tenant's id (`t-...`).")),
    request_body = CreateKeyBody,
    responses((status = 201, body = KeyView), AdminCall, JsonBody, (status = 404, response = NotFound)))]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<CreateKeyBody>,
) -> Result<(StatusCode, Json<KeyView>)> {
    rules::Label128::require("name", &body.name)?;
    let id = rules::known_id::<rules::TenantIdText>("tenant", id)?;
    let secret = new_secret();
    let key =
        state.store.create_key(Some(&TenantId(id)), false, &body.name, &secret, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(KeyView::new(&key, Some(secret)))))
}

/// List a tenant's API keys in id order, revoked ones included; secrets are never shown.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/keys",
    params(("id" = rules::TenantIdText, Path, description = "The tenant's id (`t-...`).")),
    responses((status = 200, body = Vec<KeyView>), AdminCall, (status = 404, response = NotFound)))]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Vec<KeyView>>> {
    let tenant = TenantId(rules::known_id::<rules::TenantIdText>("tenant", id)?);
    state.store.get_tenant(&tenant).await?;
    Ok(Json(state.store.list_keys(Some(&tenant)).await?.iter().map(|k| KeyView::new(k, None)).collect()))
}

/// Revoke an API key: within seconds, every request made with it is refused. An admin key cannot
/// revoke itself (`409 self_revocation`).
#[utoipa::path(delete, path = "/v1/admin/keys/{id}",
    params(("id" = rules::KeyIdText, Path, description = "The key's id (`k-...`).")),
    responses((status = 204, description = "The key is revoked."), AdminCall,
        (status = 404, response = NotFound), (status = 409, response = Conflict)))]
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
    let id = rules::known_id::<rules::KeyIdText>("active API key", id)?;
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
    #[schema(value_type = rules::Label128)]
    pub name: String,
    /// Region code, such as `south-china`.
    #[schema(value_type = rules::AreaCode)]
    pub region: String,
    /// Province code within the region, such as `guangdong`.
    #[schema(value_type = rules::AreaCode)]
    pub province: String,
    /// City code within the province, such as `shenzhen`.
    #[schema(value_type = rules::AreaCode)]
    pub city: String,
    /// ISPs the IDC is connected to, at least one (`bgp` is multi-line).
    #[schema(schema_with = carriers_schema)]
    pub carriers: Vec<String>,
    /// The most the IDC may sell, across all servers: an upper bound. What it sells is read from its
    /// cluster, within this bound.
    pub capacity: SpecBody,
    /// Percent of what its cluster offers that is never sold (room for evictions, bursts and daemons
    /// the kubelet does not reserve for), 0 to 90; default 0.
    #[serde(default, deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 90)]
    pub headroom_percent: u8,
    /// Runtimes its cluster runs: `container` always (added when left out), `rich`, `vm`.
    #[serde(default)]
    #[schema(schema_with = word_list_schema::<Runtime>)]
    pub runtimes: Vec<String>,
    /// `active` when absent.
    #[schema(schema_with = optional_word_schema::<IdcStatus>)]
    pub status: Option<String>,
    /// The kubeconfig context naming the IDC's Kubernetes cluster.
    #[schema(value_type = Option<rules::KubeContext>)]
    pub kube_context: Option<String>,
    /// `runtimeClassName` of rich containers there (the platform's default, `kata`, when absent).
    #[schema(value_type = Option<rules::RuntimeClass>)]
    pub rich_runtime_class: Option<String>,
    /// The address the IDC's ssh NodePorts are reached at from outside (its NAT or load balancer);
    /// the nodes' own addresses when absent.
    #[schema(value_type = Option<rules::Host>)]
    pub ssh_ingress_host: Option<String>,
}

/// An IDC's carriers: at least one.
fn carriers_schema() -> utoipa::openapi::schema::Array {
    let mut list = word_list_schema::<Carrier>();
    list.min_items = Some(1);
    list
}

/// An IDC's description with what its cluster was read to offer, what it sells of that, and its
/// capacity ledger: what is reserved, allocated and free.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdcView {
    /// IDC id, chosen by admins: letters, digits, `-` and `_`.
    pub id: String,
    /// Shown to operators only.
    pub name: String,
    /// Region code, such as `south-china`.
    pub region: String,
    /// Province code within the region, such as `guangdong`.
    pub province: String,
    /// City code within the province, such as `shenzhen`.
    pub city: String,
    /// ISPs the IDC is connected to.
    #[schema(schema_with = word_list_schema::<Carrier>)]
    pub carriers: Vec<String>,
    /// The fleet's bound: the most the IDC may sell, across all servers, whatever its cluster offers.
    pub capacity: AmountView,
    /// Percent of what its cluster offers that is never sold.
    #[schema(minimum = 0, maximum = 90)]
    pub headroom_percent: u8,
    /// What the IDC sells: what its cluster offers less foreign requests and the headroom, within
    /// `capacity`; zero until its cluster was first read.
    pub sellable: AmountView,
    /// What its cluster was last read to offer; null until it was first read.
    pub cluster: Option<ClusterView>,
    /// What is wrong with the IDC now; empty when nothing is.
    pub conditions: Vec<IdcCondition>,
    /// Runtimes its cluster runs.
    #[schema(schema_with = word_list_schema::<Runtime>)]
    pub runtimes: Vec<String>,
    /// Whether it takes new instances.
    #[schema(schema_with = word_schema::<IdcStatus>)]
    pub status: String,
    /// The kubeconfig context naming the IDC's Kubernetes cluster.
    pub kube_context: Option<String>,
    /// `runtimeClassName` of rich containers there; the platform's default when null.
    pub rich_runtime_class: Option<String>,
    /// Where the IDC's ssh NodePorts are reached from outside; the nodes' own addresses when null.
    pub ssh_ingress_host: Option<String>,
    /// Held for reservations and not yet drawn on.
    pub reserved: AmountView,
    /// Taken by live instances, including those drawn from reservations.
    pub allocated: AmountView,
    /// What new instances and reservations may still take of what it sells.
    pub free: AmountView,
}

/// An IDC's cluster as the instance manager last read it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterView {
    /// Nodes in the cluster, whatever their state.
    pub nodes: u32,
    /// Of them, schedulable and Ready: the only ones whose room is sold.
    pub schedulable_nodes: u32,
    /// What the schedulable Ready nodes let Pods use (their `status.allocatable`), summed.
    pub allocatable: AmountView,
    /// What Pods the platform does not own request on those nodes, and those waiting for a node.
    pub foreign: AmountView,
    /// The room of its nodes (allocatable less foreign requests), one per shape no other covers,
    /// most CPU first: an instance fits the IDC only if one of them covers its size.
    pub node_shapes: Vec<AmountView>,
    /// When the cluster was read, UTC RFC 3339.
    pub read_at: DateTime<Utc>,
}

impl ClusterView {
    fn new(cluster: &ClusterCapacity, read_at: DateTime<Utc>) -> Self {
        ClusterView {
            nodes: cluster.nodes,
            schedulable_nodes: cluster.schedulable_nodes,
            allocatable: AmountView::from(&cluster.allocatable),
            foreign: AmountView::from(&cluster.foreign),
            node_shapes: cluster.node_shapes.iter().map(AmountView::from).collect(),
            read_at,
        }
    }
}

/// Something wrong with an IDC. `type` says which (`capacity_short` is the one there is today; more
/// may come, so a reader skips types it does not know), `message` says it for people, and each type
/// carries its own figures beside them.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IdcCondition {
    /// The IDC sells less than it has promised to live instances and reservations (its cluster
    /// shrank, or its bound or headroom changed): it takes nothing new until the promise fits
    /// again, and nothing it runs is touched.
    CapacityShort {
        /// What is short, for people.
        message: String,
        /// How much of what is allocated and reserved the IDC no longer sells.
        short_by: AmountView,
    },
}

impl From<&CapacityShort> for IdcCondition {
    fn from(short: &CapacityShort) -> Self {
        IdcCondition::CapacityShort {
            message: short.to_string(),
            short_by: AmountView::from(&short.short_by),
        }
    }
}

fn idc_view(report: &IdcReport) -> IdcView {
    let IdcReport { idc, line, cluster } = report;
    IdcView {
        id: idc.id.0.clone(),
        name: idc.name.clone(),
        region: idc.area.region.clone(),
        province: idc.area.province.clone(),
        city: idc.area.city.clone(),
        carriers: idc.carriers.iter().map(|c| c.to_string()).collect(),
        capacity: AmountView::from(&idc.capacity),
        headroom_percent: idc.headroom_percent,
        sellable: AmountView::from(&line.total),
        cluster: cluster.as_ref().map(|(c, read_at)| ClusterView::new(c, *read_at)),
        conditions: line.short().iter().map(IdcCondition::from).collect(),
        runtimes: idc.runtimes.iter().map(|r| r.to_string()).collect(),
        status: idc.status.to_string(),
        kube_context: idc.kube_context.clone(),
        rich_runtime_class: idc.rich_runtime_class.clone(),
        ssh_ingress_host: idc.ssh_ingress_host.clone(),
        reserved: AmountView::from(&line.reserved),
        allocated: AmountView::from(&line.allocated),
        free: AmountView::from(&line.free()),
    }
}

/// List every IDC, in id order, with what its cluster offers, what it sells, and what is reserved,
/// allocated and free in it.
#[utoipa::path(get, path = "/v1/admin/idcs", responses((status = 200, body = Vec<IdcView>), AdminCall))]
pub async fn list_idcs(State(state): State<AppState>, _admin: Admin) -> Result<Json<Vec<IdcView>>> {
    Ok(Json(state.store.idc_reports().await?.iter().map(idc_view).collect()))
}

/// Get one IDC, with what its cluster offers, what it sells, and what is reserved, allocated and
/// free in it.
#[utoipa::path(get, path = "/v1/admin/idcs/{id}",
    params(("id" = rules::IdcIdText, Path, description = "The IDC's id.")),
    responses((status = 200, body = IdcView), AdminCall, (status = 404, response = NotFound)))]
pub async fn get_idc(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<IdcView>> {
    let id = rules::known_id::<rules::IdcIdText>("IDC", id)?;
    Ok(Json(idc_view(&state.store.idc_report(&IdcId(id)).await?)))
}

/// Add an IDC or change one. Its area codes must not clash with the fleet's. A new IDC sells nothing
/// until its cluster is first read; a changed bound or headroom applies to the last reading at once.
#[utoipa::path(put, path = "/v1/admin/idcs/{id}",
    params(("id" = rules::IdcIdText, Path, description = "The IDC's id.")), request_body = IdcBody,
    responses((status = 200, body = IdcView), AdminCall, JsonBody, (status = 409, response = Conflict)))]
pub async fn put_idc(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<IdcBody>,
) -> Result<Json<IdcView>> {
    rules::IdcIdText::require("id", &id)?;
    rules::Label128::require("name", &body.name)?;
    for (field, code) in [("region", &body.region), ("province", &body.province), ("city", &body.city)] {
        rules::AreaCode::require(field, code)?;
    }
    if body.carriers.is_empty() {
        return Err(ApiError::invalid("carriers", "an IDC needs at least one carrier"));
    }
    if let Some(context) = &body.kube_context {
        rules::KubeContext::require("kube_context", context)?;
    }
    if let Some(class) = &body.rich_runtime_class {
        rules::RuntimeClass::require("rich_runtime_class", class)?;
    }
    if let Some(host) = &body.ssh_ingress_host {
        rules::Host::require("ssh_ingress_host", host)?;
    }
    if body.headroom_percent > MAX_HEADROOM_PERCENT {
        return Err(ApiError::invalid(
            "headroom_percent",
            format!("must be between 0 and {MAX_HEADROOM_PERCENT}"),
        ));
    }
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
        headroom_percent: body.headroom_percent,
    };
    idc.validate().map_err(|e| ApiError::invalid("idc", e.to_string()))?;
    let mut fleet = state.store.snapshot().await?.fleet;
    fleet.idcs.retain(|i| i.id != idc.id);
    fleet.idcs.push(idc.clone());
    // The codes are well-formed (checked above); clashing with the fleet's is a conflict with what exists.
    eci_core::fleet::check_area_codes(fleet.idcs.iter().map(|i| &i.area))
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "area_conflict", e.to_string()))?;
    state.store.upsert_idc(&idc, state.clock.now()).await?;
    Ok(Json(idc_view(&state.store.idc_report(&idc.id).await?)))
}

/// Stop placing new instances in an IDC; what runs there keeps running.
#[utoipa::path(post, path = "/v1/admin/idcs/{id}/drain",
    params(("id" = rules::IdcIdText, Path, description = "The IDC's id.")),
    responses((status = 200, body = IdcView), AdminCall, (status = 404, response = NotFound)))]
pub async fn drain_idc(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<IdcView>> {
    let id = IdcId(rules::known_id::<rules::IdcIdText>("IDC", id)?);
    state.store.set_idc_status(&id, IdcStatus::Draining, state.clock.now()).await?;
    Ok(Json(idc_view(&state.store.idc_report(&id).await?)))
}
