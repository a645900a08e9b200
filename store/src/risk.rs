//! Risk control's records: the rules deletions are held to, the audit log of every destructive
//! operation, the breakers' events and the operations they hold. Every release of the store passes
//! [`Store::admit`] inside its transaction, after the release was written and before it commits, so
//! that a refused deletion leaves nothing behind: an instance is either released or untouched.
//! Core decides ([`eci_core::risk`]); the coordination store counts the windows
//! ([`Breakers`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eci_core::alerts::{Alert, AlertName};
use eci_core::risk::{
    Actor, ActorKind, BreakerEventKind, ClusterObject, ClusterVerdict, HoldState, Rule, Rules, TargetKind,
    TenantRules, Verdict, Window,
};
use eci_core::{IdcId, KeyId, TenantId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::coordination::{Admission, Breakers};
use crate::instances::Scope;
use crate::ledger::Tx;
use crate::paging::{Keyset, Page};
use crate::sql::{int, json, millis, new_id, opt_time, time, to_json, uint, word};
use crate::{Error, Result, Store};

/// How long a tenant's rules are cached: a change made through another replica applies within it.
pub const RULES_TTL: Duration = Duration::from_secs(5);

/// The `scope` of the platform's row in `risk_rules`.
const PLATFORM: &str = "platform";

/// What a deletion asks of risk control.
#[derive(Debug, Clone)]
pub struct Deletion {
    /// Who asks.
    pub actor: Actor,
    /// The number the caller confirms will end (`?confirm=`), for a tenant's request; system actors
    /// are not held to the bulk guard, which is there for one careless request.
    pub confirm: Option<u64>,
}

impl Deletion {
    /// A tenant's request through the API with its key, confirming `confirm` instances.
    pub fn by_tenant(key: &KeyId, confirm: Option<u64>) -> Deletion {
        Deletion { actor: Actor::key(ActorKind::Tenant, key), confirm }
    }

    /// One of the platform's own loops.
    pub fn by(kind: ActorKind) -> Deletion {
        Deletion { actor: Actor::system(kind), confirm: None }
    }

    fn bulk_guarded(&self) -> bool {
        self.actor.kind == ActorKind::Tenant
    }

    /// A refused operation of the platform's own loops waits and is tried again; a caller's is
    /// refused, and held only when a breaker refused it (an admin may approve it then).
    fn holds_on(&self, rule: Rule) -> bool {
        match self.actor.kind {
            ActorKind::Tenant => matches!(rule, Rule::IdcWindow | Rule::TenantWindow | Rule::PlatformWindow),
            _ => true,
        }
    }
}

/// The operation a [`Deletion`] is aimed at, as the audit log names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub kind: TargetKind,
    pub id: &'a str,
    pub tenant: &'a TenantId,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its id (`ra-...`), time-ordered.
    pub id: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// Who asked.
    pub actor: ActorKind,
    /// The key it asked with, if any.
    pub key_id: Option<KeyId>,
    /// Who it was in a cluster's words, for an out-of-band deletion.
    pub subject: Option<String>,
    /// Whose instances it concerned, when known.
    pub tenant_id: Option<TenantId>,
    /// What it was aimed at.
    pub target_kind: TargetKind,
    /// The id of what it was aimed at.
    pub target_id: String,
    /// The IDC, for a deletion inside one cluster.
    pub idc_id: Option<IdcId>,
    /// How many instances it ended or would have ended.
    pub count: u64,
    /// What became of it.
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: Rule,
    /// The breaker that refused it, if one did.
    pub breaker: Option<Window>,
    /// What it was told.
    pub message: String,
}

/// Which audit lines to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only those concerning this tenant's instances (a tenant sees no others).
    pub tenant: Option<TenantId>,
    /// Only those of this kind of actor.
    pub actor: Option<ActorKind>,
    /// Only those with this verdict.
    pub verdict: Option<Verdict>,
    /// Only those aimed at this kind of target.
    pub target_kind: Option<TargetKind>,
    /// Only those aimed at this id.
    pub target_id: Option<String>,
    /// Only those decided at or after this moment.
    pub since: Option<DateTime<Utc>>,
}

/// A breaker tripped or reset, or a held operation approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerEvent {
    /// Its id (`re-...`), time-ordered.
    pub id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: BreakerEventKind,
    /// The breaker, for a trip or a reset.
    pub breaker: Option<Window>,
    /// The held operation, for an approval.
    pub hold_id: Option<String>,
    /// The admin's key, for a reset or an approval.
    pub key_id: Option<KeyId>,
    /// What happened, in words.
    pub message: String,
}

/// A destructive operation refused for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its id (`rh-...`).
    pub id: String,
    /// When it was first refused.
    pub created_at: DateTime<Utc>,
    /// Who asked.
    pub actor: ActorKind,
    /// The key it asked with, if any.
    pub key_id: Option<KeyId>,
    /// Whose instances it concerns.
    pub tenant_id: TenantId,
    /// What it is aimed at.
    pub target_kind: TargetKind,
    /// The id of what it is aimed at.
    pub target_id: String,
    /// How many instances it would end.
    pub count: u64,
    /// The rule that holds it.
    pub rule: Rule,
    /// The breaker that refused it, if one did.
    pub breaker: Option<Window>,
    /// Where it stands.
    pub state: HoldState,
    /// When it was approved or went through.
    pub decided_at: Option<DateTime<Utc>>,
    /// The admin who approved it.
    pub decided_by: Option<KeyId>,
}

/// A breaker that is open, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBreaker {
    /// Its window.
    pub window: Window,
    /// When it tripped.
    pub tripped_at: DateTime<Utc>,
}

const AUDIT_COLUMNS: &str = "id, at, actor, key_id, subject, tenant_id, target_kind, target_id, idc_id, count, verdict, rule, breaker, message";
const HOLD_COLUMNS: &str = "id, created_at, actor, key_id, tenant_id, target_kind, target_id, count, rule, breaker, \
    state, decided_at, decided_by";

fn breaker_from(value: Option<String>) -> Result<Option<Window>> {
    value
        .map(|key| Window::parse(&key).ok_or_else(|| Error::Corrupt { what: "breaker", why: key.clone() }))
        .transpose()
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        at: time(row.try_get("at")?)?,
        actor: word("actor", &row.try_get::<String, _>("actor")?)?,
        key_id: row.try_get::<Option<String>, _>("key_id")?.map(KeyId),
        subject: row.try_get("subject")?,
        tenant_id: row.try_get::<Option<String>, _>("tenant_id")?.map(TenantId),
        target_kind: word("risk target", &row.try_get::<String, _>("target_kind")?)?,
        target_id: row.try_get("target_id")?,
        idc_id: row.try_get::<Option<String>, _>("idc_id")?.map(IdcId),
        count: uint("count", row.try_get("count")?)?,
        verdict: word("risk verdict", &row.try_get::<String, _>("verdict")?)?,
        rule: word("risk rule", &row.try_get::<String, _>("rule")?)?,
        breaker: breaker_from(row.try_get("breaker")?)?,
        message: row.try_get("message")?,
    })
}

fn hold_from_row(row: &AnyRow) -> Result<Hold> {
    let breaker: String = row.try_get("breaker")?;
    Ok(Hold {
        id: row.try_get("id")?,
        created_at: time(row.try_get("created_at")?)?,
        actor: word("actor", &row.try_get::<String, _>("actor")?)?,
        key_id: row.try_get::<Option<String>, _>("key_id")?.map(KeyId),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        target_kind: word("risk target", &row.try_get::<String, _>("target_kind")?)?,
        target_id: row.try_get("target_id")?,
        count: uint("count", row.try_get("count")?)?,
        rule: word("risk rule", &row.try_get::<String, _>("rule")?)?,
        breaker: breaker_from(Some(breaker).filter(|b| !b.is_empty()))?,
        state: word("hold state", &row.try_get::<String, _>("state")?)?,
        decided_at: opt_time(row.try_get("decided_at")?)?,
        decided_by: row.try_get::<Option<String>, _>("decided_by")?.map(KeyId),
    })
}

fn event_from_row(row: &AnyRow) -> Result<BreakerEvent> {
    Ok(BreakerEvent {
        id: row.try_get("id")?,
        at: time(row.try_get("at")?)?,
        kind: word("breaker event", &row.try_get::<String, _>("kind")?)?,
        breaker: breaker_from(row.try_get("breaker")?)?,
        hold_id: row.try_get("hold_id")?,
        key_id: row.try_get::<Option<String>, _>("key_id")?.map(KeyId),
        message: row.try_get("message")?,
    })
}

/// The states a release applies to: every live state but `stopping`, which is released already.
fn releasable() -> Vec<eci_core::InstanceState> {
    let mut states = eci_core::InstanceState::released_as(eci_core::lifecycle::Release::Stop);
    states.extend(eci_core::InstanceState::released_as(eci_core::lifecycle::Release::EndNow));
    states
}

/// An audit line about to be written.
pub(crate) struct Line<'a> {
    pub actor: &'a Actor,
    pub target_kind: TargetKind,
    pub target_id: &'a str,
    pub tenant: Option<&'a TenantId>,
    pub idc: Option<&'a IdcId>,
    pub count: u64,
    pub verdict: Verdict,
    pub rule: Rule,
    pub breaker: Option<&'a Window>,
    pub message: &'a str,
}

async fn insert_audit<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    line: &Line<'_>,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO risk_audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(new_id("ra-"))
    .bind(now_ms)
    .bind(line.actor.kind.as_str())
    .bind(line.actor.key.as_ref().map(|k| k.0.clone()))
    .bind(line.actor.subject.clone())
    .bind(line.tenant.map(|t| t.0.clone()))
    .bind(line.target_kind.as_str())
    .bind(line.target_id)
    .bind(line.idc.map(|i| i.0.clone()))
    .bind(int(line.count))
    .bind(line.verdict.as_str())
    .bind(line.rule.as_str())
    .bind(line.breaker.map(Window::key))
    .bind(line.message)
    .execute(executor)
    .await?;
    Ok(())
}

/// A breaker event about to be written.
struct Event<'a> {
    kind: BreakerEventKind,
    breaker: Option<&'a Window>,
    hold: Option<&'a str>,
    admin: Option<&'a KeyId>,
}

async fn insert_event<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    executor: E,
    event: &Event<'_>,
    message: &str,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO risk_events (id, at, kind, breaker, hold_id, key_id, message) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id("re-"))
    .bind(now_ms)
    .bind(event.kind.as_str())
    .bind(event.breaker.map(Window::key))
    .bind(event.hold.map(str::to_string))
    .bind(event.admin.map(|k| k.0.clone()))
    .bind(message)
    .execute(executor)
    .await?;
    Ok(())
}

impl Store {
    /// The rules stored under `scope` (the platform's, or a tenant's overrides), or their default.
    async fn stored_rules<T: serde::de::DeserializeOwned + Default>(&self, scope: &str) -> Result<T> {
        let row = sqlx::query("SELECT rules FROM risk_rules WHERE scope = $1")
            .bind(scope)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => json("risk rules", &row.try_get::<String, _>("rules")?),
            None => Ok(T::default()),
        }
    }

    /// The platform's rules: the defaults until an admin sets them.
    pub async fn platform_rules(&self) -> Result<Rules> {
        self.stored_rules(PLATFORM).await
    }

    /// A tenant's overrides of the platform's rules (none until an admin sets them).
    pub async fn tenant_rules(&self, tenant: &TenantId) -> Result<TenantRules> {
        self.get_tenant(tenant).await?;
        self.stored_rules(&tenant.0).await
    }

    /// The rules `tenant`'s deletions are held to: the platform's with its overrides; cached for
    /// [`RULES_TTL`].
    pub async fn rules_for(&self, tenant: &TenantId) -> Result<Rules> {
        if let Some(rules) = self.risk_rules.get(&tenant.0) {
            return Ok(rules);
        }
        let overrides: TenantRules = self.stored_rules(&tenant.0).await?;
        let rules = self.platform_rules().await?.with(&overrides);
        self.risk_rules.insert(tenant.0.clone(), rules);
        Ok(rules)
    }

    /// Sets the platform's rules.
    pub async fn set_platform_rules(&self, rules: &Rules, now: DateTime<Utc>) -> Result<Rules> {
        rules.validate().map_err(Error::InvalidRules)?;
        self.put_rules(PLATFORM, &to_json(rules), now).await?;
        Ok(*rules)
    }

    /// Sets a tenant's overrides; the rules they make must hold.
    pub async fn set_tenant_rules(
        &self,
        tenant: &TenantId,
        rules: &TenantRules,
        now: DateTime<Utc>,
    ) -> Result<TenantRules> {
        self.get_tenant(tenant).await?;
        self.platform_rules().await?.with(rules).validate().map_err(Error::InvalidRules)?;
        self.put_rules(&tenant.0, &to_json(rules), now).await?;
        Ok(*rules)
    }

    async fn put_rules(&self, scope: &str, rules: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO risk_rules (scope, rules, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
        )
        .bind(scope)
        .bind(rules)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        self.risk_rules.invalidate_all();
        Ok(())
    }

    /// Refuses a deletion of `scope` when anything in it is labelled `eci.io/delete-protection=always`:
    /// its batch (or the batches of its group), or one of its live instances.
    pub(crate) async fn refuse_protected(&self, scope: Scope<'_>) -> Result<()> {
        let (instances, batches, value) = match scope {
            Scope::Instance(id) => {
                ("id = $1", "id = (SELECT batch_id FROM instances WHERE id = $1) AND state = 'active'", &id.0)
            }
            Scope::Batch(id) => ("batch_id = $1", "id = $1 AND state = 'active'", &id.0),
            Scope::Group(id) => (
                "batch_id IN (SELECT id FROM batches WHERE group_id = $1)",
                "group_id = $1 AND state = 'active'",
                &id.0,
            ),
        };
        let row = sqlx::query(&format!(
            "SELECT 'batch' AS kind, id FROM batches WHERE {batches} AND delete_protected = 1 \
             UNION ALL SELECT 'instance' AS kind, id FROM instances WHERE {instances} AND delete_protected = 1 \
                 AND ended_at IS NULL \
             LIMIT 1"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let kind: String = row.try_get("kind")?;
                Err(Error::DeleteProtected {
                    what: if kind == "batch" { "batch" } else { "instance" },
                    id: row.try_get("id")?,
                })
            }
            None => Ok(()),
        }
    }

    /// Holds a written release to risk control's rules (read before its transaction began: a
    /// transaction waiting for a second connection could starve the pool) before it commits: the bulk
    /// guard for a tenant's request, then the windows (all or nothing), passed once by an approved
    /// hold of the same operation. Allowed, it is audited in the transaction; refused, the caller
    /// rolls the transaction back and hands the error to [`Store::refused`].
    #[tracing::instrument(name = "risk_check", level = "debug", skip_all, fields(step = "admit"))]
    pub(crate) async fn admit(
        &self,
        tx: &mut Tx<'_>,
        deletion: &Deletion,
        target: Target<'_>,
        per_idc: &BTreeMap<IdcId, u64>,
        rules: &Rules,
        now_ms: i64,
    ) -> Result<()> {
        let count: u64 = per_idc.values().sum();
        if deletion.bulk_guarded() && rules.may_need_confirmation(count) {
            // The released instances are no longer live; the tenant had them before this request.
            let live_after: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM instances WHERE tenant_id = $1 AND {}",
                crate::sql::state_in(&releasable())
            ))
            .bind(&target.tenant.0)
            .fetch_one(&mut **tx)
            .await?;
            let live = uint("count", live_after)? + count;
            if let Some(needed) = rules.bulk_confirmation(count, live)
                && deletion.confirm != Some(needed)
            {
                return Err(Error::ConfirmationRequired { count: needed, live });
            }
        }
        let approved = sqlx::query_scalar::<_, String>(
            "SELECT id FROM risk_holds WHERE target_kind = $1 AND target_id = $2 AND state = 'approved'",
        )
        .bind(target.kind.as_str())
        .bind(target.id)
        .fetch_optional(&mut **tx)
        .await?;
        let now = u64::try_from(now_ms).unwrap_or(0);
        let takes = rules.windows(target.tenant, per_idc);
        if let Admission::Refused(refusal) = self.breakers.take(&takes, now, approved.is_some()).await? {
            return Err(Error::DeletionRateLimited(Box::new(refusal)));
        }
        let (rule, message) = match &approved {
            Some(hold) => (Rule::Approval, format!("approved hold {hold}")),
            None => (Rule::None, format!("{count} instance(s) released")),
        };
        // Whatever was held for this operation is done now that it went through.
        sqlx::query(
            "UPDATE risk_holds SET state = 'done', decided_at = COALESCE(decided_at, $1) \
             WHERE target_kind = $2 AND target_id = $3 AND state <> 'done'",
        )
        .bind(now_ms)
        .bind(target.kind.as_str())
        .bind(target.id)
        .execute(&mut **tx)
        .await?;
        let idc = (per_idc.len() == 1).then(|| per_idc.keys().next()).flatten();
        let line = Line {
            actor: &deletion.actor,
            target_kind: target.kind,
            target_id: target.id,
            tenant: Some(target.tenant),
            idc,
            count,
            verdict: Verdict::Allowed,
            rule,
            breaker: None,
            message: &message,
        };
        insert_audit(&mut **tx, &line, now_ms).await
    }

    /// Records a refused deletion (its transaction rolled back): the audit line, the breaker's trip,
    /// and the hold of an operation that waits. A system actor's operation is audited when it is
    /// first held, not at every attempt. Returns the refusal for the caller to answer with.
    pub(crate) async fn refused(
        &self,
        deletion: &Deletion,
        target: Target<'_>,
        idc: Option<&IdcId>,
        count: u64,
        error: Error,
        now_ms: i64,
    ) -> Error {
        match self.record_refusal(deletion, target, idc, count, &error, now_ms).await {
            Ok(()) => error,
            Err(recording) => {
                tracing::error!(error = ?recording, refusal = %error, "recording a refused deletion failed");
                error
            }
        }
    }

    async fn record_refusal(
        &self,
        deletion: &Deletion,
        target: Target<'_>,
        idc: Option<&IdcId>,
        count: u64,
        error: &Error,
        now_ms: i64,
    ) -> Result<()> {
        let (rule, breaker, tripped) = match error {
            Error::DeleteProtected { .. } => (Rule::DeleteProtection, None, false),
            Error::ConfirmationRequired { .. } => (Rule::BulkGuard, None, false),
            Error::DeletionRateLimited(refusal) => {
                (refusal.window.rule(), Some(&refusal.window), refusal.tripped)
            }
            _ => return Ok(()),
        };
        let message = error.to_string();
        let mut tx = self.pool.begin().await?;
        if tripped && let Some(window) = breaker {
            let tripped =
                Event { kind: BreakerEventKind::Tripped, breaker: Some(window), hold: None, admin: None };
            insert_event(&mut *tx, &tripped, &message, now_ms).await?;
            tracing::error!(alert = "breaker_tripped", breaker = %window, "deletion breaker tripped");
        }
        let held = deletion.holds_on(rule);
        let mut first = true;
        if held {
            let inserted = sqlx::query(&format!(
                "INSERT INTO risk_holds ({HOLD_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'held', NULL, NULL) \
                 ON CONFLICT (target_kind, target_id) WHERE state <> 'done' DO NOTHING"
            ))
            .bind(new_id("rh-"))
            .bind(now_ms)
            .bind(deletion.actor.kind.as_str())
            .bind(deletion.actor.key.as_ref().map(|k| k.0.clone()))
            .bind(&target.tenant.0)
            .bind(target.kind.as_str())
            .bind(target.id)
            .bind(int(count))
            .bind(rule.as_str())
            .bind(breaker.map(Window::key).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            first = inserted.rows_affected() == 1;
        }
        if first || deletion.actor.kind == ActorKind::Tenant {
            let verdict = if held { Verdict::Held } else { Verdict::Denied };
            let line = Line {
                actor: &deletion.actor,
                target_kind: target.kind,
                target_id: target.id,
                tenant: Some(target.tenant),
                idc,
                count,
                verdict,
                rule,
                breaker,
                message: &message,
            };
            insert_audit(&mut *tx, &line, now_ms).await?;
        }
        tx.commit().await?;
        if tripped && let Some(window) = breaker {
            let key = window.key();
            self.raise(Alert::new(
                AlertName::BreakerTripped,
                time(now_ms)?,
                &[("breaker", &key), ("actor", deletion.actor.kind.as_str()), ("tenant", &target.tenant.0)],
                format!(
                    "deletion breaker {key} tripped: deletions it counts wait until an admin resets it \
                     (`eci admin risk reset {key}`); {message}"
                ),
            ));
        }
        Ok(())
    }

    /// A page of the audit log, oldest first, after `cursor` (an audit line's id).
    pub async fn audit_log(
        &self,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<AuditRecord>> {
        let keyset = Keyset::new(cursor, limit);
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM risk_audit WHERE id > $1");
        let mut binds: Vec<String> = Vec::new();
        let mut since = None;
        let mut next = |sql: &mut String, clause: &str, value: String| {
            binds.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len() + 1)));
        };
        if let Some(t) = &filter.tenant {
            next(&mut sql, " AND tenant_id = ?", t.0.clone());
        }
        if let Some(a) = filter.actor {
            next(&mut sql, " AND actor = ?", a.as_str().into());
        }
        if let Some(v) = filter.verdict {
            next(&mut sql, " AND verdict = ?", v.as_str().into());
        }
        if let Some(k) = filter.target_kind {
            next(&mut sql, " AND target_kind = ?", k.as_str().into());
        }
        if let Some(id) = &filter.target_id {
            next(&mut sql, " AND target_id = ?", id.clone());
        }
        let mut n = binds.len() + 1;
        if let Some(at) = filter.since {
            n += 1;
            sql.push_str(&format!(" AND at >= ${n}"));
            since = Some(millis(at));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut query = sqlx::query(&sql).bind(keyset.after);
        for b in &binds {
            query = query.bind(b);
        }
        if let Some(at) = since {
            query = query.bind(at);
        }
        let (rows, more) = keyset.split(query.bind(keyset.fetch()).fetch_all(&self.pool).await?);
        let items = rows.iter().map(audit_from_row).collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |r| &r.id))
    }

    /// A page of breaker events, oldest first.
    pub async fn breaker_events(&self, cursor: Option<&str>, limit: u32) -> Result<Page<BreakerEvent>> {
        let keyset = Keyset::new(cursor, limit);
        let rows = sqlx::query(
            "SELECT id, at, kind, breaker, hold_id, key_id, message FROM risk_events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(keyset.after)
        .bind(keyset.fetch())
        .fetch_all(&self.pool)
        .await?;
        let (rows, more) = keyset.split(rows);
        let items = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |e| &e.id))
    }

    /// A page of held operations (those of `tenant`, or all), oldest first; `open` leaves out those done.
    pub async fn holds(
        &self,
        tenant: Option<&TenantId>,
        open: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Hold>> {
        let keyset = Keyset::new(cursor, limit);
        let mut sql = format!("SELECT {HOLD_COLUMNS} FROM risk_holds WHERE id > $1");
        if open {
            sql.push_str(" AND state <> 'done'");
        }
        if tenant.is_some() {
            sql.push_str(" AND tenant_id = $3");
        }
        sql.push_str(" ORDER BY id LIMIT $2");
        let mut query = sqlx::query(&sql).bind(keyset.after).bind(keyset.fetch());
        if let Some(t) = tenant {
            query = query.bind(&t.0);
        }
        let (rows, more) = keyset.split(query.fetch_all(&self.pool).await?);
        let items = rows.iter().map(hold_from_row).collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |h| &h.id))
    }

    /// Approves one held operation: its next attempt goes through once, counted in the windows but
    /// never refused by them, and the breakers stay as they are. An operation held by its deletion
    /// protection is not the breaker's to let through: its label must go.
    pub async fn approve_hold(&self, id: &str, admin: &KeyId, now: DateTime<Utc>) -> Result<Hold> {
        let now_ms = millis(now);
        let hold = self.hold(id).await?;
        let refusal = match (hold.state, hold.rule, hold.target_kind) {
            (HoldState::Done, ..) => Some("it is done already"),
            (_, Rule::DeleteProtection, _) => Some("it is held by its deletion protection: remove the label"),
            (_, _, TargetKind::Orphan) => Some(
                "an orphan clean-up goes on when its IDC's breaker is reset, once its objects are known to be orphans",
            ),
            _ => None,
        };
        if let Some(why) = refusal {
            return Err(Error::HoldNotApprovable { id: id.to_string(), why });
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE risk_holds SET state = 'approved', decided_at = $1, decided_by = $2 WHERE id = $3 AND state = 'held'",
        )
        .bind(now_ms)
        .bind(&admin.0)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let approved =
            Event { kind: BreakerEventKind::Approved, breaker: None, hold: Some(id), admin: Some(admin) };
        let message = format!("{} {} of {} approved once", hold.target_kind, hold.target_id, hold.tenant_id);
        insert_event(&mut *tx, &approved, &message, now_ms).await?;
        tx.commit().await?;
        self.hold(id).await
    }

    /// One held operation, by its id.
    async fn hold(&self, id: &str) -> Result<Hold> {
        let row = sqlx::query(&format!("SELECT {HOLD_COLUMNS} FROM risk_holds WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound { what: "hold", id: id.to_string() })?;
        hold_from_row(&row)
    }

    /// Closes a breaker and empties its window (audited); says whether it was open.
    pub async fn reset_breaker(&self, window: &Window, admin: &KeyId, now: DateTime<Utc>) -> Result<bool> {
        let was_open = self.breakers.reset(window).await?;
        let reset =
            Event { kind: BreakerEventKind::Reset, breaker: Some(window), hold: None, admin: Some(admin) };
        let message = if was_open {
            "breaker closed and its window emptied"
        } else {
            "window emptied; the breaker was closed"
        };
        insert_event(&self.pool, &reset, message, millis(now)).await?;
        tracing::warn!(breaker = %window, admin.key = %admin, was_open, "deletion breaker reset");
        Ok(was_open)
    }

    /// The breakers open now.
    pub async fn open_breakers(&self) -> Result<Vec<OpenBreaker>> {
        self.breakers
            .open()
            .await?
            .into_iter()
            .map(|(window, at)| Ok(OpenBreaker { window, tripped_at: time(int(at))? }))
            .collect()
    }

    /// Opens again, in the coordination store, every breaker the events say tripped and was not reset
    /// since: called at start-up, so a breaker kept in process survives a restart.
    pub async fn restore_breakers(&self) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT breaker, kind, at FROM risk_events WHERE breaker IS NOT NULL AND kind IN ('tripped', 'reset') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut last: BTreeMap<String, (BreakerEventKind, i64)> = BTreeMap::new();
        for row in &rows {
            let kind: BreakerEventKind = word("breaker event", &row.try_get::<String, _>("kind")?)?;
            last.insert(row.try_get("breaker")?, (kind, row.try_get("at")?));
        }
        let open: Vec<(Window, u64)> = last
            .into_iter()
            .filter(|(_, (kind, _))| *kind == BreakerEventKind::Tripped)
            .filter_map(|(key, (_, at))| Some((Window::parse(&key)?, u64::try_from(at).ok()?)))
            .collect();
        self.breakers.restore(&open).await?;
        Ok(open.len())
    }

    /// Replaces the coordination store's breakers (in process by default) with `breakers`: Redis, in
    /// production, so every replica shares the windows.
    pub fn with_breakers(mut self, breakers: Breakers) -> Store {
        self.breakers = breakers;
        self
    }

    /// Asks risk control whether the reconciler of `idc` may delete the cluster objects of `instance`
    /// (of `tenant`), which no live instance owns: counted in the windows like any deletion, audited,
    /// and refused (an [`Error::DeletionRateLimited`]) when a window is full, which is what keeps a
    /// control plane started against an empty or stale database from deleting its fleet.
    pub async fn admit_orphan_deletion(
        &self,
        idc: &IdcId,
        tenant: &TenantId,
        instance: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now_ms = millis(now);
        let deletion = Deletion::by(ActorKind::Reconciler);
        // The held operation is the IDC's orphan clean-up, whichever orphan it was at: one hold, and
        // one audit line, however many passes and orphans meet the open breaker.
        tracing::debug!(idc.id = %idc, instance.id = instance, "orphan deletion asked");
        let target = Target { kind: TargetKind::Orphan, id: &idc.0, tenant };
        let per_idc = BTreeMap::from([(idc.clone(), 1)]);
        let rules = self.rules_for(tenant).await?;
        let mut tx = self.pool.begin().await?;
        match self.admit(&mut tx, &deletion, target, &per_idc, &rules, now_ms).await {
            Ok(()) => {
                tx.commit().await?;
                Ok(())
            }
            Err(error) => {
                tx.rollback().await?;
                Err(self.refused(&deletion, target, Some(idc), 1, error, now_ms).await)
            }
        }
    }
}

/// A cluster object whose DELETE an IDC's API server asks the admission webhook about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewedObject<'a> {
    /// A Pod labelled as `instance`'s.
    Pod {
        /// The instance its `eci.io/instance` label names.
        instance: &'a str,
    },
    /// A KubeVirt VirtualMachineInstance labelled as `instance`'s.
    VirtualMachineInstance {
        /// The instance its `eci.io/instance` label names.
        instance: &'a str,
    },
    /// A namespace the platform manages.
    Namespace {
        /// The namespace's name (`eci-<tenant>` for a tenant's).
        name: &'a str,
    },
}

impl Store {
    /// Decides the deletion of `object` in `idc` that `subject` (the API server's user name) asked
    /// the cluster for behind the platform's back, and audits the decision, whichever it is.
    #[tracing::instrument(skip_all, fields(idc.id = %idc, object = ?object, subject))]
    pub async fn review_cluster_deletion(
        &self,
        idc: &IdcId,
        object: ReviewedObject<'_>,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<ClusterVerdict> {
        // A configuration that names the wrong IDC would have every deletion judged against an
        // empty fleet and allowed: it is refused instead, so the mistake shows at once.
        let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM idcs WHERE id = $1")
            .bind(&idc.0)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Err(Error::NotFound { what: "IDC", id: idc.0.clone() });
        }
        let (target_kind, target_id, tenant, count, verdict) = match object {
            ReviewedObject::Pod { instance } | ReviewedObject::VirtualMachineInstance { instance } => {
                let row = sqlx::query("SELECT state, tenant_id FROM instances WHERE id = $1 AND idc_id = $2")
                    .bind(instance)
                    .bind(&idc.0)
                    .fetch_optional(&self.pool)
                    .await?;
                let (state, tenant) = match row {
                    Some(row) => (
                        Some(word("instance state", &row.try_get::<String, _>("state")?)?),
                        Some(TenantId(row.try_get("tenant_id")?)),
                    ),
                    None => (None, None),
                };
                let kind = match object {
                    ReviewedObject::Pod { .. } => TargetKind::Pod,
                    _ => TargetKind::VirtualMachineInstance,
                };
                let verdict =
                    eci_core::risk::review_cluster_deletion(&ClusterObject::Workload { instance, state });
                (kind, instance, tenant, 1, verdict)
            }
            ReviewedObject::Namespace { name } => {
                let tenant = TenantId::from_namespace(name);
                let (live, first) = match &tenant {
                    Some(tenant) => {
                        let row = sqlx::query(&format!(
                            "SELECT COUNT(*) AS live, MIN(id) AS first FROM instances \
                             WHERE tenant_id = $1 AND idc_id = $2 AND {}",
                            crate::sql::state_in(&releasable())
                        ))
                        .bind(&tenant.0)
                        .bind(&idc.0)
                        .fetch_one(&self.pool)
                        .await?;
                        (uint("count", row.try_get("live")?)?, row.try_get::<Option<String>, _>("first")?)
                    }
                    None => (0, None),
                };
                let verdict = eci_core::risk::review_cluster_deletion(&ClusterObject::Namespace {
                    name,
                    live,
                    first: first.as_deref(),
                });
                (TargetKind::Namespace, name, tenant, live, verdict)
            }
        };
        let actor = Actor { kind: ActorKind::OutOfBand, key: None, subject: Some(subject.to_string()) };
        let line = Line {
            actor: &actor,
            target_kind,
            target_id,
            tenant: tenant.as_ref(),
            idc: Some(idc),
            count,
            verdict: verdict.verdict,
            rule: verdict.rule,
            breaker: None,
            message: &verdict.message,
        };
        insert_audit(&self.pool, &line, millis(now)).await?;
        match verdict.verdict {
            Verdict::Denied => {
                tracing::warn!(reason = %verdict.message, "out-of-band deletion denied");
                let kind = target_kind.as_str();
                let mut labels = vec![("idc", idc.0.as_str()), ("target_kind", kind), ("target", target_id)];
                labels.extend(tenant.as_ref().map(|t| ("tenant", t.0.as_str())));
                labels.push(("subject", subject));
                self.raise(Alert::new(
                    AlertName::OutOfBandDeletionDenied,
                    now,
                    &labels,
                    format!("{subject} asked IDC {idc} to delete {kind} {target_id}: {}", verdict.message),
                ));
            }
            _ => tracing::info!(reason = %verdict.message, "out-of-band deletion allowed"),
        }
        Ok(verdict)
    }
}

impl Store {
    /// Ends a release written in `tx`: commits it if risk control admits it (and hands the IDCs their
    /// work), or rolls it back and records the refusal.
    pub(crate) async fn commit_release(
        &self,
        mut tx: Tx<'_>,
        deletion: &Deletion,
        target: Target<'_>,
        released: &crate::instances::Released,
        rules: &Rules,
        now_ms: i64,
    ) -> Result<()> {
        match self.admit(&mut tx, deletion, target, &released.per_idc, rules, now_ms).await {
            Ok(()) => {
                tx.commit().await?;
                self.report_stopping(&released.stopping);
                Ok(())
            }
            Err(error) => {
                tx.rollback().await?;
                let idc = (released.per_idc.len() == 1).then(|| released.per_idc.keys().next()).flatten();
                Err(self.refused(deletion, target, idc, released.count(), error, now_ms).await)
            }
        }
    }

    /// [`Store::refuse_protected`], the refusal recorded.
    #[tracing::instrument(name = "risk_check", level = "debug", skip_all, fields(step = "protection"))]
    pub(crate) async fn check_protection(
        &self,
        deletion: &Deletion,
        target: Target<'_>,
        scope: Scope<'_>,
        now_ms: i64,
    ) -> Result<()> {
        match self.refuse_protected(scope).await {
            Err(error @ Error::DeleteProtected { .. }) => {
                Err(self.refused(deletion, target, None, 0, error, now_ms).await)
            }
            other => other,
        }
    }
}
