//! What tenants pay: `/v1/usage`, `/v1/batches/{id}/cost`, `/v1/invoices[/{period}]`, and the price
//! catalogue under `/v1/admin/prices`. Amounts are integer micro-units of currency; quantities are
//! exact integers in the smallest units (milli-vCPU-milliseconds, MiB-milliseconds, GPU-milliseconds),
//! written as strings because they outgrow what JSON readers hold exactly.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use eci_billing::{GroupBy, InvoiceState, LineKind, Period, Price, PriceTier, Totals, Window};
use eci_core::{BatchId, Carrier, Runtime};
use eci_store::billing::Invoice;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path, Query};
use crate::openapi::{AdminCall, BadRequest, Conflict, JsonBody, NotFound, TenantCall, Unprocessable};
use crate::wire::rules::{self, TextRule};
use crate::wire::{optional_word_schema, whole, word_schema};

/// The longest window usage is asked for at once.
const MAX_WINDOW_DAYS: i64 = 366;
/// The highest price of one unit-second, in micro-units: a thousand of the currency per vCPU-second
/// is beyond any real price, and keeps every bill within the 64 bits it is counted in.
const MAX_PRICE_MICROS: u64 = 1_000_000_000;

routes! { router, ROUTES;
    "/v1/usage" => get(usage);
    "/v1/batches/{id}/cost" => get(batch_cost);
    "/v1/groups/{id}/cost" => get(group_cost);
    "/v1/invoices" => get(list_invoices);
    "/v1/invoices/{period}" => get(get_invoice);
    "/v1/admin/prices" => get(list_prices).post(add_price);
    "/v1/admin/prices/{id}" => delete(withdraw_price);
}

/// Quantities and amounts of a set of charges.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotalsView {
    /// Billed time: running time rounded up to whole seconds per instance, at least the minimum charge.
    pub billed_ms: i64,
    /// CPU billed, in milli-vCPU-milliseconds as a decimal integer string (1 vCPU for 1 s is `1000000`).
    pub cpu_milli_vcpu_ms: String,
    /// Memory billed, in MiB-milliseconds as a decimal integer string (1 GiB for 1 s is `1024000`).
    pub memory_mib_ms: String,
    /// GPUs billed, in GPU-milliseconds as a decimal integer string (1 GPU for 1 s is `1000`).
    pub gpu_ms: String,
    /// What the CPU costs, in micro-units of currency.
    pub cpu_micros: u64,
    /// What the memory costs, in micro-units of currency.
    pub memory_micros: u64,
    /// What the GPUs cost, in micro-units of currency.
    pub gpu_micros: u64,
    /// What it costs in all, in micro-units of currency: `cpu_micros + memory_micros + gpu_micros`.
    pub total_micros: u64,
}

impl From<&Totals> for TotalsView {
    fn from(t: &Totals) -> Self {
        TotalsView {
            billed_ms: t.billed_ms,
            cpu_milli_vcpu_ms: t.quantities.cpu_milli_vcpu_ms.to_string(),
            memory_mib_ms: t.quantities.memory_mib_ms.to_string(),
            gpu_ms: t.quantities.gpu_ms.to_string(),
            cpu_micros: t.amounts.cpu.0,
            memory_micros: t.amounts.memory.0,
            gpu_micros: t.amounts.gpu.0,
            total_micros: t.amounts.total.0,
        }
    }
}

/// The window to add usage up over, and how to group it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start of the window, RFC 3339; default the start of the current month (UTC).
    #[serde(default, deserialize_with = "rules::rfc3339_opt")]
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<DateTime<Utc>>,
    /// End of the window, RFC 3339, exclusive, after `from` and at most 366 days after it (else 422);
    /// default just after now, so that what runs now is costed as if it ended now.
    #[serde(default, deserialize_with = "rules::rfc3339_opt")]
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<DateTime<Utc>>,
    /// How to group the usage.
    #[param(value_type = Option<rules::GroupByText>)]
    pub group_by: Option<String>,
}

/// The usage of one group of the tenant's instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageGroupView {
    /// The batch id, label value (empty for instances without the label), `region/province/city`,
    /// carrier, runtime or `YYYY-MM-DD` (UTC).
    pub key: String,
    /// Instances with usage in the group (by `day`, one running over midnight counts in both days).
    pub instances: u64,
    /// What the group's instances used and cost in the window.
    pub totals: TotalsView,
}

/// The tenant's usage and what it costs over a window, in all and by group.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// Start of the window, UTC RFC 3339.
    pub from: DateTime<Utc>,
    /// End of the window, exclusive, UTC RFC 3339.
    pub to: DateTime<Utc>,
    /// Instances still running are counted up to this moment, UTC RFC 3339.
    pub as_of: DateTime<Utc>,
    /// The grouping asked for (`batch`, `label:<key>`, `area`, `carrier`, `runtime` or `day`); null if none.
    pub group_by: Option<String>,
    /// How many of the tenant's instances have usage in the window.
    pub instances: u64,
    /// What all of them used and cost in the window; the groups add up to it exactly.
    pub total: TotalsView,
    /// One entry per group, sorted by key; empty when not grouped.
    pub groups: Vec<UsageGroupView>,
}

/// Get the tenant's usage and its cost over a window of at most 366 days, in all or grouped by
/// batch, label, area, carrier, runtime or UTC day; running instances are costed as if they ended now.
#[utoipa::path(get, path = "/v1/usage", params(UsageQuery),
    responses((status = 200, body = UsageView), TenantCall, (status = 400, response = BadRequest),
        (status = 422, response = Unprocessable)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageView>> {
    if let Some(g) = &q.group_by {
        rules::GroupByText::require("group_by", g)?;
    }
    let now = state.clock.now();
    let month_start = Period::containing(now.timestamp_millis()).and_then(|p| at(Some(p.window().from_ms())));
    let from = q.from.or(month_start).unwrap_or(now);
    // Up to and including now: a live instance's cost so far is priced at now (its rounding and
    // minimum charge included), which a window ending exactly at now would leave out.
    let to = q.to.unwrap_or(now + chrono::Duration::milliseconds(1));
    // The document cannot relate two parameters, so a window that is well-formed in each of its ends
    // but not as a whole is a 422.
    if to <= from {
        return Err(ApiError::unprocessable("to", "must be after `from`"));
    }
    if to - from > chrono::Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::unprocessable("to", format!("a window spans at most {MAX_WINDOW_DAYS} days")));
    }
    let window = Window::new(from.timestamp_millis(), to.timestamp_millis())
        .map_err(|e| ApiError::unprocessable("from", e.to_string()))?;
    let group_by = q
        .group_by
        .as_deref()
        .map(|g| g.parse::<GroupBy>().map_err(|e| ApiError::invalid("group_by", e.to_string())))
        .transpose()?;
    let usage =
        state.store.usage(&caller.tenant.id, window, group_by.as_ref(), &state.config.billing, now).await?;
    Ok(Json(UsageView {
        from,
        to,
        as_of: now,
        group_by: group_by.map(|g| g.to_string()),
        instances: usage.instances,
        total: TotalsView::from(&usage.total),
        groups: usage
            .groups
            .iter()
            .map(|g| UsageGroupView {
                key: g.key.clone(),
                instances: g.instances,
                totals: TotalsView::from(&g.totals),
            })
            .collect(),
    }))
}

/// What to show of a batch's cost.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CostQuery {
    /// Also list each instance's cost.
    #[serde(default)]
    pub instances: bool,
}

/// What one instance of a batch has cost so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceCostView {
    /// Instance id, starting `i-`.
    pub instance_id: String,
    /// When it first ran, UTC RFC 3339; billing starts here; null if it never ran, and then it costs nothing.
    pub started_at: Option<DateTime<Utc>>,
    /// When it terminated or failed, UTC RFC 3339; billing stops here; null while it still runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// What it used and costs.
    pub totals: TotalsView,
}

/// What a batch's instances have cost so far, in all and one by one.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCostView {
    /// Batch id, starting `b-`.
    pub batch_id: String,
    /// Instances still running are counted up to this moment, UTC RFC 3339.
    pub as_of: DateTime<Utc>,
    /// What all its instances used and cost; the instances add up to it exactly.
    pub total: TotalsView,
    /// Each instance's cost, in instance id order; only with `instances=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceCostView>>,
}

fn at(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

/// Get what a batch has cost so far, in all and, with `instances=true`, per instance; instances still
/// running are costed as if they ended now.
#[utoipa::path(get, path = "/v1/batches/{id}/cost",
    params(("id" = rules::BatchIdText, Path, description = "The batch's id (`b-...`)."), CostQuery),
    responses((status = 200, body = BatchCostView), TenantCall, (status = 400, response = BadRequest),
        (status = 404, response = NotFound)))]
pub async fn batch_cost(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<CostQuery>,
) -> Result<Json<BatchCostView>> {
    let id = rules::known_id::<rules::BatchIdText>("batch", id)?;
    let cost = state
        .store
        .batch_cost(&caller.tenant.id, &BatchId(id), &state.config.billing, state.clock.now())
        .await?;
    Ok(Json(BatchCostView {
        batch_id: cost.batch_id.0,
        as_of: cost.as_of,
        total: TotalsView::from(&cost.total),
        instances: q.instances.then(|| instance_costs(&cost.instances)),
    }))
}

/// What a group's instances have cost so far, in all and one by one.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupCostView {
    /// Group id, starting `g-`.
    pub group_id: String,
    /// Instances still running are counted up to this moment, UTC RFC 3339.
    pub as_of: DateTime<Utc>,
    /// What all its instances used and cost, those it released included; the instances add up
    /// to it exactly.
    pub total: TotalsView,
    /// Each instance's cost, in instance id order; only with `instances=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceCostView>>,
}

fn instance_costs(costs: &[eci_store::billing::InstanceCost]) -> Vec<InstanceCostView> {
    costs
        .iter()
        .map(|i| InstanceCostView {
            instance_id: i.instance.id.0.clone(),
            started_at: at(i.instance.started_ms),
            ended_at: at(i.instance.ended_ms),
            totals: TotalsView::from(&i.totals),
        })
        .collect()
}

/// Get what a group has cost so far (every instance it ever held, through the `eci.io/group`
/// label its instances carry), in all and, with `instances=true`, per instance.
#[utoipa::path(get, path = "/v1/groups/{id}/cost",
    params(("id" = rules::GroupIdText, Path, description = "The group's id (`g-...`)."), CostQuery),
    responses((status = 200, body = GroupCostView), TenantCall, (status = 400, response = BadRequest),
        (status = 404, response = NotFound)))]
pub async fn group_cost(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<CostQuery>,
) -> Result<Json<GroupCostView>> {
    let id = rules::known_id::<rules::GroupIdText>("group", id)?;
    let cost = state
        .store
        .group_cost(&caller.tenant.id, &eci_core::GroupId(id), &state.config.billing, state.clock.now())
        .await?;
    Ok(Json(GroupCostView {
        group_id: cost.group_id.0,
        as_of: cost.as_of,
        total: TotalsView::from(&cost.total),
        instances: q.instances.then(|| instance_costs(&cost.instances)),
    }))
}

/// One line of an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLineView {
    /// `usage` of the invoice's month, or `adjustment` of an earlier, final month.
    #[schema(schema_with = word_schema::<LineKind>)]
    pub kind: LineKind,
    /// The month the line bills or corrects, `YYYY-MM` (UTC).
    pub period: String,
    /// The runtime the price is for: `container`, `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = word_schema::<Runtime>)]
    pub runtime: Runtime,
    /// The price's tier, `region/province/city/carrier` with `*` for any.
    pub tier: String,
    /// The id of the price version charged, as the price catalogue names it.
    pub price_id: String,
    /// The CPU price charged, in micro-units of currency per vCPU-second.
    pub cpu_micros_per_vcpu_second: u64,
    /// The memory price charged, in micro-units of currency per GiB-second.
    pub memory_micros_per_gib_second: u64,
    /// The GPU price charged, in micro-units of currency per GPU-second.
    pub gpu_micros_per_gpu_second: u64,
    /// Billed time in milliseconds, summed over the line's instances; an adjustment's may be negative.
    pub billed_ms: i64,
    /// CPU billed, in milli-vCPU-milliseconds as a decimal integer string; an adjustment's may be negative.
    pub cpu_milli_vcpu_ms: String,
    /// Memory billed, in MiB-milliseconds as a decimal integer string; an adjustment's may be negative.
    pub memory_mib_ms: String,
    /// GPUs billed, in GPU-milliseconds as a decimal integer string; an adjustment's may be negative.
    pub gpu_ms: String,
    /// What the CPU costs, in micro-units of currency; negative for a credit.
    pub cpu_micros: i64,
    /// What the memory costs, in micro-units of currency; negative for a credit.
    pub memory_micros: i64,
    /// What the GPUs cost, in micro-units of currency; negative for a credit.
    pub gpu_micros: i64,
    /// What the line comes to, in micro-units of currency: `cpu_micros + memory_micros + gpu_micros`.
    pub amount_micros: i64,
}

/// A tenant's invoice for one UTC month.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    /// `YYYY-MM`, a UTC month.
    pub period: String,
    /// `draft` until the month and its grace period are over, then `final`, never to change again.
    #[schema(schema_with = word_schema::<InvoiceState>)]
    pub state: InvoiceState,
    /// When a draft was worked out, or when the invoice became final, UTC RFC 3339.
    pub as_of: DateTime<Utc>,
    /// What the invoice comes to, in micro-units of currency: the exact sum of its lines' `amount_micros`.
    pub total_micros: i64,
    /// Usage lines per price, then adjustment lines; left out of the invoice listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<InvoiceLineView>>,
}

fn invoice_view(invoice: &Invoice, with_lines: bool) -> InvoiceView {
    InvoiceView {
        period: invoice.period.to_string(),
        state: invoice.state,
        as_of: invoice.as_of,
        total_micros: invoice.total_micros,
        lines: with_lines.then(|| {
            invoice
                .lines
                .iter()
                .map(|l| InvoiceLineView {
                    kind: l.kind,
                    period: l.period.to_string(),
                    runtime: l.runtime,
                    tier: l.tier.clone(),
                    price_id: l.price_id.clone(),
                    cpu_micros_per_vcpu_second: l.cpu_micros_per_vcpu_second,
                    memory_micros_per_gib_second: l.memory_micros_per_gib_second,
                    gpu_micros_per_gpu_second: l.gpu_micros_per_gpu_second,
                    billed_ms: l.billed_ms,
                    cpu_milli_vcpu_ms: l.cpu_milli_vcpu_ms.to_string(),
                    memory_mib_ms: l.memory_mib_ms.to_string(),
                    gpu_ms: l.gpu_ms.to_string(),
                    cpu_micros: l.cpu_micros,
                    memory_micros: l.memory_micros,
                    gpu_micros: l.gpu_micros,
                    amount_micros: l.amount_micros,
                })
                .collect()
        }),
    }
}

/// List the tenant's invoices without their lines, oldest first: one per UTC month from the month the
/// tenant was created to the current one.
#[utoipa::path(get, path = "/v1/invoices", responses((status = 200, body = Vec<InvoiceView>), TenantCall))]
pub async fn list_invoices(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<InvoiceView>>> {
    let invoices = state.store.invoices(&caller.tenant.id, &state.config.billing, state.clock.now()).await?;
    Ok(Json(invoices.iter().map(|invoice| invoice_view(invoice, false)).collect()))
}

/// How to return an invoice.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    /// `json` (default) or `csv` (the lines, RFC 4180).
    #[param(schema_with = invoice_formats)]
    pub format: Option<String>,
}

/// The formats an invoice comes in.
fn invoice_formats() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["json", "csv"]))
        .build()
}

/// Get the tenant's invoice for one month (`YYYY-MM`, UTC) with its lines, as JSON or as CSV; an
/// invoice whose month and grace period are over is final.
#[utoipa::path(get, path = "/v1/invoices/{period}",
    params(("period" = rules::PeriodText, Path, description = "The month, `YYYY-MM` (UTC)."), InvoiceQuery),
    responses((status = 200, description = "The invoice, as JSON or (`format=csv`) its lines as CSV.",
            content((InvoiceView = "application/json"), (String = "text/csv"))),
        TenantCall, (status = 400, response = BadRequest), (status = 404, response = NotFound)))]
pub async fn get_invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(period): Path<String>,
    Query(q): Query<InvoiceQuery>,
) -> Result<Response> {
    let period: Period =
        period.parse().map_err(|e: eci_billing::PeriodError| ApiError::invalid("period", e.to_string()))?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::invalid("format", format!("`{other}` is not `json` or `csv`"))),
    };
    let invoice =
        state.store.invoice(&caller.tenant.id, period, &state.config.billing, state.clock.now()).await?;
    if csv {
        let disposition = format!("attachment; filename=\"invoice-{period}.csv\"");
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            eci_billing::statement_csv(&invoice.lines),
        )
            .into_response());
    }
    Ok(Json(invoice_view(&invoice, true)).into_response())
}

/// A price version, as written and shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// Letters, digits, `-`, `_` and `.`; unique in the catalogue.
    #[schema(value_type = rules::PriceIdText)]
    pub id: String,
    /// The runtime the price is for: `container`, `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = word_schema::<Runtime>)]
    pub runtime: String,
    /// The tier's region code; unset for any. Of the tiers that match an instance, the most specific applies.
    #[schema(value_type = Option<rules::AreaCode>)]
    pub region: Option<String>,
    /// The tier's province code, only with `region` (else 422); unset for any province.
    #[schema(value_type = Option<rules::AreaCode>)]
    pub province: Option<String>,
    /// The tier's city code, only with `province` (else 422); unset for any city.
    #[schema(value_type = Option<rules::AreaCode>)]
    pub city: Option<String>,
    /// The carrier (ISP) the price is for; unset for any carrier.
    #[schema(schema_with = optional_word_schema::<Carrier>)]
    pub carrier: Option<String>,
    /// From this moment on, UTC RFC 3339 (now or later, else 422: prices never change the past).
    #[serde(deserialize_with = "rules::rfc3339")]
    pub effective_from: DateTime<Utc>,
    /// The CPU price, in micro-units of currency per vCPU-second, at most 1000000000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub cpu_micros_per_vcpu_second: u64,
    /// The memory price, in micro-units of currency per GiB-second, at most 1000000000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub memory_micros_per_gib_second: u64,
    /// The GPU price, in micro-units of currency per GPU-second, at most 1000000000; instances without
    /// GPUs never pay it.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub gpu_micros_per_gpu_second: u64,
}

impl PriceBody {
    fn to_price(&self) -> Result<Price> {
        rules::PriceIdText::require("id", &self.id)?;
        for (field, code) in [("region", &self.region), ("province", &self.province), ("city", &self.city)] {
            if let Some(code) = code {
                rules::AreaCode::require(field, code)?;
            }
        }
        for (field, micros) in [
            ("cpu_micros_per_vcpu_second", self.cpu_micros_per_vcpu_second),
            ("memory_micros_per_gib_second", self.memory_micros_per_gib_second),
            ("gpu_micros_per_gpu_second", self.gpu_micros_per_gpu_second),
        ] {
            if micros > MAX_PRICE_MICROS {
                return Err(ApiError::invalid(field, format!("must be at most {MAX_PRICE_MICROS}")));
            }
        }
        Ok(Price {
            id: self.id.clone(),
            runtime: self
                .runtime
                .parse::<Runtime>()
                .map_err(|e| ApiError::invalid("runtime", e.to_string()))?,
            tier: PriceTier {
                region: self.region.clone(),
                province: self.province.clone(),
                city: self.city.clone(),
                carrier: self
                    .carrier
                    .as_deref()
                    .map(|c| c.parse::<Carrier>().map_err(|e| ApiError::invalid("carrier", e.to_string())))
                    .transpose()?,
            },
            effective_from_ms: self.effective_from.timestamp_millis(),
            cpu_micros_per_vcpu_second: self.cpu_micros_per_vcpu_second,
            memory_micros_per_gib_second: self.memory_micros_per_gib_second,
            gpu_micros_per_gpu_second: self.gpu_micros_per_gpu_second,
        })
    }

    fn from_price(p: &Price) -> PriceBody {
        PriceBody {
            id: p.id.clone(),
            runtime: p.runtime.to_string(),
            region: p.tier.region.clone(),
            province: p.tier.province.clone(),
            city: p.tier.city.clone(),
            carrier: p.tier.carrier.map(|c| c.to_string()),
            effective_from: at(Some(p.effective_from_ms)).unwrap_or_default(),
            cpu_micros_per_vcpu_second: p.cpu_micros_per_vcpu_second,
            memory_micros_per_gib_second: p.memory_micros_per_gib_second,
            gpu_micros_per_gpu_second: p.gpu_micros_per_gpu_second,
        }
    }
}

/// List every price version in the catalogue, in the order they take effect (then by id).
#[utoipa::path(get, path = "/v1/admin/prices", responses((status = 200, body = Vec<PriceBody>), AdminCall))]
pub async fn list_prices(State(state): State<AppState>, _admin: Admin) -> Result<Json<Vec<PriceBody>>> {
    let catalogue = state.store.price_catalogue().await?;
    Ok(Json(catalogue.prices().iter().map(PriceBody::from_price).collect()))
}

/// Add a price version to the catalogue, taking effect now or later so that what was billed stays
/// what it was; its id must be new.
#[utoipa::path(post, path = "/v1/admin/prices", request_body = PriceBody,
    responses((status = 201, body = PriceBody), AdminCall, JsonBody, (status = 409, response = Conflict),
        (status = 422, response = Unprocessable)))]
pub async fn add_price(
    State(state): State<AppState>,
    _admin: Admin,
    Body(body): Body<PriceBody>,
) -> Result<(StatusCode, Json<PriceBody>)> {
    let price = state.store.add_price(body.to_price()?, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(PriceBody::from_price(&price))))
}

/// Withdraw a price version that has not taken effect yet; one already in force is history and stays.
#[utoipa::path(delete, path = "/v1/admin/prices/{id}",
    params(("id" = rules::PriceIdText, Path, description = "The price's id.")),
    responses((status = 204, description = "The price is withdrawn."), AdminCall,
        (status = 404, response = NotFound), (status = 422, response = Unprocessable)))]
pub async fn withdraw_price(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let id = rules::known_id::<rules::PriceIdText>("price", id)?;
    state.store.withdraw_price(&id, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
