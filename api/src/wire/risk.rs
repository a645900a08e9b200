//! The JSON shapes of risk control: its rules, the audit log, breaker events, open breakers and held
//! operations.

use chrono::{DateTime, Utc};
use eci_core::risk::{
    ActorKind, BreakerEventKind, Budget, HoldState, Rule, Rules, TargetKind, TenantRules, Verdict,
};
use eci_store::risk::{AuditRecord, BreakerEvent, Hold, OpenBreaker};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wire::{whole, word_schema};

/// At most `deletions` in any `window_seconds`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletionBudgetBody {
    /// How many deletions the window holds, at most 1000000000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub deletions: u64,
    /// The window's length, 1 to 86400 seconds.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 1, maximum = 86400)]
    pub window_seconds: u64,
}

impl From<Budget> for DeletionBudgetBody {
    fn from(b: Budget) -> Self {
        DeletionBudgetBody { deletions: b.deletions, window_seconds: b.window_seconds }
    }
}

impl From<DeletionBudgetBody> for Budget {
    fn from(b: DeletionBudgetBody) -> Self {
        Budget { deletions: b.deletions, window_seconds: b.window_seconds }
    }
}

/// Every rule deletions are held to (`PUT /v1/admin/risk/rules`, and what `GET /v1/risk/rules`
/// shows).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskRulesBody {
    /// A request ending more than this share (percent) of the tenant's live instances needs
    /// `?confirm=`...
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 100)]
    pub bulk_share_percent: u64,
    /// ...once it ends at least this many (at most 1000000000).
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub bulk_share_min: u64,
    /// A request ending more than this many instances needs `?confirm=`, whatever the share (at
    /// most 1000000000).
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub bulk_count: u64,
    /// The deletions of one IDC, whoever asks.
    pub per_idc: DeletionBudgetBody,
    /// The deletions of one tenant.
    pub per_tenant: DeletionBudgetBody,
    /// Every deletion of the platform.
    pub platform: DeletionBudgetBody,
}

impl From<Rules> for RiskRulesBody {
    fn from(r: Rules) -> Self {
        RiskRulesBody {
            bulk_share_percent: r.bulk_share_percent,
            bulk_share_min: r.bulk_share_min,
            bulk_count: r.bulk_count,
            per_idc: r.per_idc.into(),
            per_tenant: r.per_tenant.into(),
            platform: r.platform.into(),
        }
    }
}

impl From<RiskRulesBody> for Rules {
    fn from(r: RiskRulesBody) -> Self {
        Rules {
            bulk_share_percent: r.bulk_share_percent,
            bulk_share_min: r.bulk_share_min,
            bulk_count: r.bulk_count,
            per_idc: r.per_idc.into(),
            per_tenant: r.per_tenant.into(),
            platform: r.platform.into(),
        }
    }
}

/// A tenant's overrides of the platform's rules (`PUT /v1/admin/tenants/{id}/risk-rules`); a field
/// left out keeps the platform's. The IDC and platform windows are shared and cannot be overridden.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRiskRulesBody {
    /// Overrides `bulk_share_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 100)]
    pub bulk_share_percent: Option<u64>,
    /// Overrides `bulk_share_min`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub bulk_share_min: Option<u64>,
    /// Overrides `bulk_count`.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub bulk_count: Option<u64>,
    /// Overrides `per_tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_tenant: Option<DeletionBudgetBody>,
}

impl From<TenantRules> for TenantRiskRulesBody {
    fn from(r: TenantRules) -> Self {
        TenantRiskRulesBody {
            bulk_share_percent: r.bulk_share_percent,
            bulk_share_min: r.bulk_share_min,
            bulk_count: r.bulk_count,
            per_tenant: r.per_tenant.map(Into::into),
        }
    }
}

impl From<TenantRiskRulesBody> for TenantRules {
    fn from(r: TenantRiskRulesBody) -> Self {
        TenantRules {
            bulk_share_percent: r.bulk_share_percent,
            bulk_share_min: r.bulk_share_min,
            bulk_count: r.bulk_count,
            per_tenant: r.per_tenant.map(Into::into),
        }
    }
}

/// The rules that apply to the caller: a tenant's own (the platform's with its overrides), or,
/// for an admin, the platform's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RiskRulesView {
    /// The tenant they apply to; null for the platform's own.
    pub tenant_id: Option<String>,
    /// The rules in force.
    pub rules: RiskRulesBody,
    /// What the tenant's overrides change of the platform's.
    pub overrides: TenantRiskRulesBody,
}

/// One destructive operation and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Its id (`ra-...`), time-ordered.
    pub id: String,
    /// When it was decided, UTC RFC 3339.
    pub at: DateTime<Utc>,
    /// Who asked.
    #[schema(schema_with = word_schema::<ActorKind>)]
    pub actor: ActorKind,
    /// The API key it was asked with, if any.
    pub key_id: Option<String>,
    /// Who it was in a cluster's words, for an out-of-band deletion.
    pub subject: Option<String>,
    /// Whose instances it concerned.
    pub tenant_id: Option<String>,
    /// What it was aimed at.
    #[schema(schema_with = word_schema::<TargetKind>)]
    pub target_kind: TargetKind,
    /// The id of what it was aimed at.
    pub target_id: String,
    /// The IDC, for a deletion in one cluster.
    pub idc_id: Option<String>,
    /// How many instances it ended, or would have.
    pub count: u64,
    /// `allowed`, `denied` or `held`.
    #[schema(schema_with = word_schema::<Verdict>)]
    pub verdict: Verdict,
    /// The rule that decided.
    #[schema(schema_with = word_schema::<Rule>)]
    pub rule: Rule,
    /// The breaker that refused it (`idc:<id>`, `tenant:<id>`, `platform`), if one did.
    pub breaker: Option<String>,
    /// What the asker was told.
    pub message: String,
}

impl From<&AuditRecord> for AuditView {
    fn from(r: &AuditRecord) -> Self {
        AuditView {
            id: r.id.clone(),
            at: r.at,
            actor: r.actor,
            key_id: r.key_id.as_ref().map(|k| k.0.clone()),
            subject: r.subject.clone(),
            tenant_id: r.tenant_id.as_ref().map(|t| t.0.clone()),
            target_kind: r.target_kind,
            target_id: r.target_id.clone(),
            idc_id: r.idc_id.as_ref().map(|i| i.0.clone()),
            count: r.count,
            verdict: r.verdict,
            rule: r.rule,
            breaker: r.breaker.as_ref().map(|w| w.key()),
            message: r.message.clone(),
        }
    }
}

/// A breaker tripped or reset, or a held operation approved.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakerEventView {
    /// Its id (`re-...`), time-ordered.
    pub id: String,
    /// When it happened, UTC RFC 3339.
    pub at: DateTime<Utc>,
    /// `tripped`, `reset` or `approved`.
    #[schema(schema_with = word_schema::<BreakerEventKind>)]
    pub kind: BreakerEventKind,
    /// The breaker, for a trip or a reset.
    pub breaker: Option<String>,
    /// The held operation, for an approval.
    pub hold_id: Option<String>,
    /// The admin's key, for a reset or an approval.
    pub key_id: Option<String>,
    /// What happened.
    pub message: String,
}

impl From<&BreakerEvent> for BreakerEventView {
    fn from(e: &BreakerEvent) -> Self {
        BreakerEventView {
            id: e.id.clone(),
            at: e.at,
            kind: e.kind,
            breaker: e.breaker.as_ref().map(|w| w.key()),
            hold_id: e.hold_id.clone(),
            key_id: e.key_id.as_ref().map(|k| k.0.clone()),
            message: e.message.clone(),
        }
    }
}

/// An open breaker.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakerView {
    /// `idc:<id>`, `tenant:<id>` or `platform`.
    pub breaker: String,
    /// The rule it enforces.
    #[schema(schema_with = word_schema::<Rule>)]
    pub rule: Rule,
    /// When it tripped, UTC RFC 3339.
    pub tripped_at: DateTime<Utc>,
}

impl From<&OpenBreaker> for BreakerView {
    fn from(b: &OpenBreaker) -> Self {
        BreakerView { breaker: b.window.key(), rule: b.window.rule(), tripped_at: b.tripped_at }
    }
}

/// The open breakers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakersView {
    /// Every open breaker; empty when deletions flow.
    pub open: Vec<BreakerView>,
}

/// What `POST /v1/admin/risk/breakers/{breaker}/reset` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetView {
    /// The breaker.
    pub breaker: String,
    /// Whether it was open (its window is emptied either way).
    pub was_open: bool,
}

/// A destructive operation refused for now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HoldView {
    /// Its id (`rh-...`).
    pub id: String,
    /// When it was first refused, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
    /// Who asked.
    #[schema(schema_with = word_schema::<ActorKind>)]
    pub actor: ActorKind,
    /// The key it was asked with, if any.
    pub key_id: Option<String>,
    /// Whose instances it concerns.
    pub tenant_id: String,
    /// What it is aimed at.
    #[schema(schema_with = word_schema::<TargetKind>)]
    pub target_kind: TargetKind,
    /// The id of what it is aimed at.
    pub target_id: String,
    /// How many instances it would end.
    pub count: u64,
    /// The rule that holds it.
    #[schema(schema_with = word_schema::<Rule>)]
    pub rule: Rule,
    /// The breaker that refused it, if one did.
    pub breaker: Option<String>,
    /// `held`, `approved` (its next attempt goes through once) or `done`.
    #[schema(schema_with = word_schema::<HoldState>)]
    pub state: HoldState,
    /// When it was approved or went through.
    pub decided_at: Option<DateTime<Utc>>,
    /// The admin who approved it.
    pub decided_by: Option<String>,
}

impl From<&Hold> for HoldView {
    fn from(h: &Hold) -> Self {
        HoldView {
            id: h.id.clone(),
            created_at: h.created_at,
            actor: h.actor,
            key_id: h.key_id.as_ref().map(|k| k.0.clone()),
            tenant_id: h.tenant_id.0.clone(),
            target_kind: h.target_kind,
            target_id: h.target_id.clone(),
            count: h.count,
            rule: h.rule,
            breaker: h.breaker.as_ref().map(|w| w.key()),
            state: h.state,
            decided_at: h.decided_at,
            decided_by: h.decided_by.as_ref().map(|k| k.0.clone()),
        }
    }
}
