//! `/v1/risk/...` and `/v1/admin/risk/...`: risk control's rules, audit log, breakers and held
//! operations. Every destructive path passes the store's risk gate; this is where people look at
//! what it decided and where admins reset a breaker or let one held operation through.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use eci_core::TenantId;
use eci_core::risk::{ActorKind, TargetKind, Verdict, Window};
use eci_store::risk::AuditFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Admin, Anyone};
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path, Query};
use crate::openapi::{AdminCall, BadRequest, Conflict, JsonBody, NotFound, TenantCall};
use crate::wire::risk::{
    AuditView, BreakerEventView, BreakersView, HoldView, ResetView, RiskRulesBody, RiskRulesView,
    TenantRiskRulesBody,
};
use crate::wire::rules::{self, TextRule};
use crate::wire::{PageView, parse_word, word_schema};
use crate::{AppState, page_limit};

routes! { router, ROUTES;
    "/v1/risk/rules" => get(get_rules);
    "/v1/risk/audit" => get(audit_log);
    "/v1/risk/events" => get(breaker_events);
    "/v1/risk/breakers" => get(open_breakers);
    "/v1/risk/holds" => get(list_holds);
    "/v1/admin/risk/rules" => put(set_platform_rules);
    "/v1/admin/tenants/{id}/risk-rules" => get(get_tenant_rules).put(set_tenant_rules);
    "/v1/admin/risk/breakers/{breaker}/reset" => post(reset_breaker);
    "/v1/admin/risk/holds/{id}/approve" => post(approve_hold);
}

/// The rules deletions are held to: a tenant's key sees its own (the platform's with its
/// overrides), an admin's the platform's.
#[utoipa::path(get, path = "/v1/risk/rules", responses((status = 200, body = RiskRulesView), TenantCall))]
pub async fn get_rules(State(state): State<AppState>, who: Anyone) -> Result<Json<RiskRulesView>> {
    Ok(Json(match who.tenant() {
        Some(tenant) => rules_view(&state, tenant).await?,
        None => RiskRulesView {
            tenant_id: None,
            rules: state.store.platform_rules().await?.into(),
            overrides: TenantRiskRulesBody::default(),
        },
    }))
}

async fn rules_view(state: &AppState, tenant: &TenantId) -> Result<RiskRulesView> {
    let overrides = state.store.tenant_rules(tenant).await?;
    let rules = state.store.platform_rules().await?.with(&overrides);
    Ok(RiskRulesView { tenant_id: Some(tenant.0.clone()), rules: rules.into(), overrides: overrides.into() })
}

/// Replace the platform's rules: the defaults of every tenant, and the IDC and platform windows.
#[utoipa::path(put, path = "/v1/admin/risk/rules", request_body = RiskRulesBody,
    responses((status = 200, body = RiskRulesView), AdminCall, JsonBody))]
pub async fn set_platform_rules(
    State(state): State<AppState>,
    admin: Admin,
    Body(body): Body<RiskRulesBody>,
) -> Result<Json<RiskRulesView>> {
    let rules = state.store.set_platform_rules(&body.into(), state.clock.now()).await?;
    tracing::warn!(admin.key = %admin.key_id, ?rules, "risk rules of the platform changed");
    Ok(Json(RiskRulesView {
        tenant_id: None,
        rules: rules.into(),
        overrides: TenantRiskRulesBody::default(),
    }))
}

/// A tenant's overrides of the platform's rules, and the rules they make.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/risk-rules",
    params(("id" = rules::TenantIdText, Path, description = "The tenant's id (`t-...`).")),
    responses((status = 200, body = RiskRulesView), AdminCall, (status = 404, response = NotFound)))]
pub async fn get_tenant_rules(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<RiskRulesView>> {
    let id = TenantId(rules::known_id::<rules::TenantIdText>("tenant", id)?);
    Ok(Json(rules_view(&state, &id).await?))
}

/// Replace a tenant's overrides of the platform's rules (the bulk guard and its own window).
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/risk-rules", request_body = TenantRiskRulesBody,
    params(("id" = rules::TenantIdText, Path, description = "The tenant's id (`t-...`).")),
    responses((status = 200, body = RiskRulesView), AdminCall, JsonBody, (status = 404, response = NotFound)))]
pub async fn set_tenant_rules(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Body(body): Body<TenantRiskRulesBody>,
) -> Result<Json<RiskRulesView>> {
    let id = TenantId(rules::known_id::<rules::TenantIdText>("tenant", id)?);
    state.store.set_tenant_rules(&id, &body.into(), state.clock.now()).await?;
    tracing::warn!(admin.key = %admin.key_id, tenant.id = %id, "risk rules of a tenant changed");
    Ok(Json(rules_view(&state, &id).await?))
}

/// Filters and paging of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this tenant's (admins only; a tenant sees its own whatever it names).
    #[param(value_type = Option<rules::TenantIdText>)]
    pub tenant_id: Option<String>,
    /// Only those of this kind of actor.
    #[param(schema_with = word_schema::<ActorKind>)]
    pub actor: Option<String>,
    /// Only those with this verdict.
    #[param(schema_with = word_schema::<Verdict>)]
    pub verdict: Option<String>,
    /// Only those aimed at this kind of target.
    #[param(schema_with = word_schema::<TargetKind>)]
    pub target_kind: Option<String>,
    /// Only those aimed at this id (an instance's, a batch's, a group's, or an IDC's for its orphan
    /// clean-up).
    #[param(max_length = 300)]
    pub target_id: Option<String>,
    /// Only those decided at or after this moment, RFC 3339.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The audit log, oldest first: every destructive operation, allowed or refused, with who asked
/// (tenant and key, or the platform's own loops), what, how many, and the rule that decided.
/// Admins see all of it; a tenant sees what concerned its instances.
#[utoipa::path(get, path = "/v1/risk/audit", params(AuditQuery),
    responses((status = 200, body = PageView<AuditView>), TenantCall, (status = 400, response = BadRequest)))]
pub async fn audit_log(
    State(state): State<AppState>,
    who: Anyone,
    Query(q): Query<AuditQuery>,
) -> Result<Json<PageView<AuditView>>> {
    if let Some(id) = &q.tenant_id {
        rules::TenantIdText::require("tenant_id", id)?;
    }
    let tenant = match (who.tenant(), q.tenant_id) {
        (Some(own), _) => Some(own.clone()),
        (None, named) => named.map(TenantId),
    };
    if let Some(id) = &q.target_id
        && id.chars().count() > 300
    {
        return Err(ApiError::invalid("target_id", "at most 300 characters"));
    }
    let filter = AuditFilter {
        tenant,
        actor: q.actor.as_deref().map(|a| parse_word("actor", a)).transpose()?,
        verdict: q.verdict.as_deref().map(|v| parse_word("verdict", v)).transpose()?,
        target_kind: q.target_kind.as_deref().map(|k| parse_word("target_kind", k)).transpose()?,
        target_id: q.target_id,
        since: q.since,
    };
    let cursor = cursor(q.cursor.as_deref())?;
    let page = state.store.audit_log(&filter, cursor, page_limit(q.limit)?).await?;
    Ok(Json(PageView {
        items: page.items.iter().map(AuditView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn cursor(cursor: Option<&str>) -> Result<Option<&str>> {
    if let Some(c) = cursor {
        rules::Cursor::require("cursor", c)?;
    }
    Ok(cursor)
}

/// Paging of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RiskPageQuery {
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Breakers tripped and reset, and held operations approved, oldest first.
#[utoipa::path(get, path = "/v1/risk/events", params(RiskPageQuery),
    responses((status = 200, body = PageView<BreakerEventView>), TenantCall, (status = 400, response = BadRequest)))]
pub async fn breaker_events(
    State(state): State<AppState>,
    _who: Anyone,
    Query(q): Query<RiskPageQuery>,
) -> Result<Json<PageView<BreakerEventView>>> {
    let page = state.store.breaker_events(cursor(q.cursor.as_deref())?, page_limit(q.limit)?).await?;
    Ok(Json(PageView {
        items: page.items.iter().map(BreakerEventView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// The breakers open now: while one is, the deletions it counts are refused (API calls with 429
/// `deletion_rate_limited`) or held (TTL expiry, scale-in, orphan clean-up) until an admin resets it.
#[utoipa::path(get, path = "/v1/risk/breakers", responses((status = 200, body = BreakersView), TenantCall))]
pub async fn open_breakers(State(state): State<AppState>, _who: Anyone) -> Result<Json<BreakersView>> {
    let open = state.store.open_breakers().await?;
    Ok(Json(BreakersView { open: open.iter().map(Into::into).collect() }))
}

/// Which held operations to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HoldQuery {
    /// Include those done (default: only those held or approved).
    pub all: Option<bool>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Operations risk control holds, oldest first: a tenant's own, or everyone's for an admin.
#[utoipa::path(get, path = "/v1/risk/holds", params(HoldQuery),
    responses((status = 200, body = PageView<HoldView>), TenantCall, (status = 400, response = BadRequest)))]
pub async fn list_holds(
    State(state): State<AppState>,
    who: Anyone,
    Query(q): Query<HoldQuery>,
) -> Result<Json<PageView<HoldView>>> {
    let open = !q.all.unwrap_or(false);
    let page =
        state.store.holds(who.tenant(), open, cursor(q.cursor.as_deref())?, page_limit(q.limit)?).await?;
    Ok(Json(PageView {
        items: page.items.iter().map(HoldView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Close a breaker and empty its window, so a whole budget of deletions may go through again
/// (audited as a `reset` event). Held TTL expiries and scale-ins go on at their next pass.
#[utoipa::path(post, path = "/v1/admin/risk/breakers/{breaker}/reset",
    params(("breaker" = String, Path, description = "`idc:<id>`, `tenant:<id>` or `platform`.")),
    responses((status = 200, body = ResetView), AdminCall, (status = 404, response = NotFound)))]
pub async fn reset_breaker(
    State(state): State<AppState>,
    admin: Admin,
    Path(breaker): Path<String>,
) -> Result<Json<ResetView>> {
    let window = Window::parse(&breaker)
        .filter(|_| breaker.len() <= 300)
        .ok_or_else(|| ApiError::not_found("breaker", &breaker))?;
    let was_open = state.store.reset_breaker(&window, &admin.key_id, state.clock.now()).await?;
    state.scaler_wake.notify_one();
    Ok(Json(ResetView { breaker: window.key(), was_open }))
}

/// Let one held operation through without closing its breaker: its next attempt (the caller's
/// retry, or the platform's next pass) is counted but not refused (audited as an `approved` event).
#[utoipa::path(post, path = "/v1/admin/risk/holds/{id}/approve",
    params(("id" = String, Path, description = "The hold's id (`rh-...`).")),
    responses((status = 200, body = HoldView), AdminCall, (status = 404, response = NotFound),
        (status = 409, response = Conflict)))]
pub async fn approve_hold(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<HoldView>> {
    if id.len() > 64 {
        return Err(ApiError::not_found("hold", &id));
    }
    let hold = state.store.approve_hold(&id, &admin.key_id, state.clock.now()).await?;
    state.scaler_wake.notify_one();
    Ok(Json(HoldView::from(&hold)))
}
