//! Instances: reads, listing, and ending one.

use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

use eci_core::alerts::{Alert, AlertName};
use eci_core::lifecycle::{Change, Release};
use eci_core::{
    Area, BatchId, BatchState, Carrier, IdcId, Instance, InstanceId, InstanceState, MiB, MilliCpu, Resources,
    SshEndpoint, TenantId,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ledger::{self, Ended, Tx};
use crate::paging::{Keyset, Page};
use crate::risk::{Deletion, Target};
use crate::sql::{millis, opt_time, state_in, time, uint, word};
use crate::{Error, Result, Store};
use eci_core::risk::TargetKind;

/// What listing instances may filter on.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    /// Only the instances of this batch.
    pub batch_id: Option<BatchId>,
    /// Only instances in this state.
    pub state: Option<InstanceState>,
    /// An area code at any level.
    pub area: Option<String>,
    /// Only instances reached through this carrier.
    pub carrier: Option<Carrier>,
}

const INSTANCE_COLUMNS: &str = "id, batch_id, tenant_id, state, cpu, memory, gpu, runtime, idc_id, region, province, \
    city, carrier, reservation_id, ip, ssh_host, ssh_port, ssh_user, failure_reason, created_at, updated_at, \
    started_at, ended_at, labels";

fn instance_from_row(row: &AnyRow) -> Result<Instance> {
    let ssh =
        match (row.try_get::<Option<String>, _>("ssh_host")?, row.try_get::<Option<i64>, _>("ssh_port")?) {
            (Some(host), Some(port)) => Some(SshEndpoint {
                host,
                port: u16::try_from(port)
                    .map_err(|_| Error::Corrupt { what: "ssh port", why: port.to_string() })?,
                user: row.try_get::<Option<String>, _>("ssh_user")?.unwrap_or_else(|| "root".into()),
            }),
            _ => None,
        };
    Ok(Instance {
        id: InstanceId(row.try_get("id")?),
        batch_id: BatchId(row.try_get("batch_id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        state: word("instance state", &row.try_get::<String, _>("state")?)?,
        spec: Resources::new(
            MilliCpu(uint("cpu", row.try_get("cpu")?)?),
            MiB(uint("memory", row.try_get("memory")?)?),
            u32::try_from(uint("gpu", row.try_get("gpu")?)?).unwrap_or(u32::MAX),
        ),
        runtime: word("runtime", &row.try_get::<String, _>("runtime")?)?,
        idc: IdcId(row.try_get("idc_id")?),
        area: Area {
            region: row.try_get("region")?,
            province: row.try_get("province")?,
            city: row.try_get("city")?,
        },
        carrier: word("carrier", &row.try_get::<String, _>("carrier")?)?,
        reservation_id: row.try_get::<Option<String>, _>("reservation_id")?.map(eci_core::ReservationId),
        labels: crate::sql::json("instance labels", &row.try_get::<String, _>("labels")?)?,
        ip: row.try_get("ip")?,
        ssh,
        failure_reason: row.try_get("failure_reason")?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
        started_at: opt_time(row.try_get("started_at")?)?,
        ended_at: opt_time(row.try_get("ended_at")?)?,
    })
}

impl Store {
    /// One of the tenant's instances.
    pub async fn get_instance(&self, tenant: &TenantId, id: &InstanceId) -> Result<Instance> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(&id.0)
        .bind(&tenant.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound { what: "instance", id: id.0.clone() })?;
        instance_from_row(&row)
    }

    /// A page of the tenant's instances in creation order, after `cursor` (an instance id).
    pub async fn list_instances(
        &self,
        tenant: &TenantId,
        filter: &InstanceFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Instance>> {
        let keyset = Keyset::new(cursor, limit);
        let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant_id = $1 AND id > $2");
        let mut binds: Vec<String> = Vec::new();
        let mut next = |sql: &mut String, clause: &str, value: String| {
            binds.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len() + 2)));
        };
        if let Some(b) = &filter.batch_id {
            next(&mut sql, " AND batch_id = ?", b.0.clone());
        }
        if let Some(s) = filter.state {
            next(&mut sql, " AND state = ?", s.as_str().into());
        }
        if let Some(a) = &filter.area {
            next(&mut sql, " AND ? IN (region, province, city)", a.clone());
        }
        if let Some(c) = filter.carrier {
            next(&mut sql, " AND carrier = ?", c.as_str().into());
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", binds.len() + 3));
        let mut query = sqlx::query(&sql).bind(&tenant.0).bind(keyset.after);
        for b in &binds {
            query = query.bind(b);
        }
        let (rows, more) = keyset.split(query.bind(keyset.fetch()).fetch_all(&self.pool).await?);
        let items = rows.iter().map(instance_from_row).collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |i| &i.id.0))
    }

    /// Releases one instance: it ends at once if nothing of it exists in the cluster yet, otherwise
    /// it turns `stopping` until the instance manager has removed its Pod or VMI. Releasing an
    /// instance that is stopping or ended changes nothing.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, instance.id = %id))]
    pub async fn release_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        deletion: &Deletion,
        now: DateTime<Utc>,
    ) -> Result<Instance> {
        self.get_instance(tenant, id).await?;
        let now_ms = millis(now);
        let target = Target { kind: TargetKind::Instance, id: &id.0, tenant };
        self.check_protection(deletion, target, Scope::Instance(id), now_ms).await?;
        let rules = self.rules_for(tenant).await?;
        let mut tx = self.pool.begin().await?;
        let released = release_instances(&mut tx, Scope::Instance(id), now_ms).await?;
        self.commit_release(tx, deletion, target, &released, &rules, now_ms).await?;
        self.get_instance(tenant, id).await
    }

    /// Sets an instance's own labels (its batch's still apply beside them); the protection label
    /// among them protects it from deletion. Changes nothing in the cluster.
    pub async fn set_instance_labels(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        labels: &std::collections::BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Instance> {
        let done = sqlx::query(
            "UPDATE instances SET labels = $1, delete_protected = $2, updated_at = $3 WHERE id = $4 AND tenant_id = $5",
        )
        .bind(crate::sql::to_json(labels))
        .bind(i64::from(eci_core::risk::is_protected(labels)))
        .bind(millis(now))
        .bind(&id.0)
        .bind(&tenant.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::NotFound { what: "instance", id: id.0.clone() });
        }
        self.get_instance(tenant, id).await
    }
}

/// An instance the instance manager must make real, with the request its objects are built from.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The instance, `pending`.
    pub instance: Instance,
    /// Shared by every instance of the batch: a 10,000-instance batch holds one copy.
    pub request: std::sync::Arc<eci_core::BatchRequest>,
}

pub use eci_core::lifecycle::Observed;

/// A live instance as a pass of its IDC's reconciler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Where it is in its life.
    pub state: InstanceState,
    /// When its object was created plus its batch's create timeout: past it, an instance that
    /// still does not run has failed. `None` until its object was created.
    pub create_deadline: Option<DateTime<Utc>>,
}

impl Store {
    /// Up to `limit` pending instances of one IDC, oldest first, with their batches' requests.
    pub async fn pending_in_idc(&self, idc: &IdcId, limit: u32) -> Result<Vec<Desired>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE idc_id = $1 AND state = 'pending' ORDER BY id LIMIT $2"
        ))
        .bind(&idc.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let instances = rows.iter().map(instance_from_row).collect::<Result<Vec<_>>>()?;
        let mut batch_ids: Vec<&BatchId> = instances.iter().map(|i| &i.batch_id).collect();
        batch_ids.sort();
        batch_ids.dedup();
        let mut requests = std::collections::BTreeMap::new();
        if !batch_ids.is_empty() {
            let sql = format!(
                "SELECT id, request FROM batches WHERE id IN ({})",
                crate::sql::placeholders(1, batch_ids.len())
            );
            let mut query = sqlx::query(&sql);
            for id in &batch_ids {
                query = query.bind(&id.0);
            }
            for row in query.fetch_all(&self.pool).await? {
                let request: eci_core::BatchRequest =
                    crate::sql::json("batch request", &row.try_get::<String, _>("request")?)?;
                requests.insert(BatchId(row.try_get("id")?), std::sync::Arc::new(request));
            }
        }
        instances
            .into_iter()
            .map(|instance| {
                let request = requests
                    .get(&instance.batch_id)
                    .cloned()
                    .ok_or_else(|| Error::NotFound { what: "batch", id: instance.batch_id.0.clone() })?;
                Ok(Desired { instance, request })
            })
            .collect()
    }

    /// The live (not ended) instances of one IDC, their states and create deadlines.
    pub async fn live_in_idc(&self, idc: &IdcId) -> Result<std::collections::BTreeMap<InstanceId, Live>> {
        let rows = sqlx::query(
            "SELECT id, state, create_deadline FROM instances \
             WHERE idc_id = $1 AND state NOT IN ('terminated', 'failed')",
        )
        .bind(&idc.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let deadline = row.try_get::<Option<i64>, _>("create_deadline")?;
                Ok((
                    InstanceId(row.try_get("id")?),
                    Live {
                        state: word("instance state", &row.try_get::<String, _>("state")?)?,
                        create_deadline: deadline.map(time).transpose()?,
                    },
                ))
            })
            .collect()
    }

    /// Records what a cluster reported about an instance. Returns the new state when it changed;
    /// `None` when the report changes nothing (the instance ended already, or it is stale).
    #[tracing::instrument(skip_all, fields(instance.id = %id))]
    pub async fn record_observation(
        &self,
        id: &InstanceId,
        observed: &Observed,
        now: DateTime<Utc>,
    ) -> Result<Option<InstanceState>> {
        let row = sqlx::query(&format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1"))
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound { what: "instance", id: id.0.clone() })?;
        let current = instance_from_row(&row)?;
        let Some(change) = current.state.observe(current.started_at, observed, now) else {
            return Ok(None);
        };
        let now_ms = millis(now);
        let from = [current.state];
        let changed = match &change {
            Change::Creating => {
                sqlx::query("UPDATE instances SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4")
                    .bind(change.to().as_str())
                    .bind(now_ms)
                    .bind(&id.0)
                    .bind(current.state.as_str())
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                    == 1
            }
            Change::Running { ip, ssh } => {
                self.record_running(&[(id.clone(), ip.clone(), ssh.clone())], now).await? == 1
            }
            Change::Terminated => {
                let mut tx = self.pool.begin().await?;
                let ended =
                    end_instances(&mut tx, Scope::Instance(id), &from, Ending::Terminated, now_ms).await?;
                tx.commit().await?;
                !ended.is_empty()
            }
            Change::Failed { reason, ended_at } => {
                let mut tx = self.pool.begin().await?;
                let ending = Ending::FailedAt(reason, millis(*ended_at));
                let ended = end_instances(&mut tx, Scope::Instance(id), &from, ending, now_ms).await?;
                tx.commit().await?;
                if !ended.is_empty() {
                    tracing::info!(reason, "instance failed");
                    if matches!(observed, Observed::Gone) {
                        self.raise(Alert::new(
                            AlertName::InstanceVanished,
                            now,
                            &[("idc", &current.idc.0), ("tenant", &current.tenant_id.0), ("instance", &id.0)],
                            format!(
                                "instance {id} was {} in IDC {} when its Pod or VMI disappeared from the \
                                 cluster; it failed and its capacity was given back",
                                current.state, current.idc
                            ),
                        ));
                    }
                }
                !ended.is_empty()
            }
        };
        Ok(changed.then(|| change.to()))
    }

    /// Records that the objects of these pending (or unknown) instances now exist in their cluster:
    /// they turn `creating`, in one statement per 500. Returns how many changed.
    pub async fn record_created(&self, ids: &[InstanceId], now: DateTime<Utc>) -> Result<u64> {
        let mut changed = 0;
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE instances SET state = 'creating', updated_at = {}, create_deadline = COALESCE(create_deadline, {} + \
                     (SELECT create_timeout_ms FROM batches WHERE batches.id = instances.batch_id)) \
                 WHERE {} AND id IN ({})",
                crate::sql::bulk_placeholders(self.backend, 1, 1),
                crate::sql::bulk_placeholders(self.backend, 2, 1),
                state_in(InstanceState::CREATES_FROM),
                crate::sql::bulk_placeholders(self.backend, 3, chunk.len()),
            );
            let mut query = sqlx::query(&sql).bind(millis(now)).bind(millis(now));
            for id in chunk {
                query = query.bind(&id.0);
            }
            changed += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(changed)
    }

    /// Records that these instances run (with their addresses), in one transaction: the common case
    /// of a pass, which would otherwise cost a read and a write per instance. An instance that is
    /// stopping or has ended is left alone. Returns how many changed.
    pub async fn record_running(
        &self,
        running: &[(InstanceId, Option<String>, Option<SshEndpoint>)],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let now_ms = millis(now);
        let mut changed = 0;
        let sql = format!(
            "UPDATE instances SET state = 'running', ip = $1, ssh_host = $2, ssh_port = $3, ssh_user = $4, \
                 started_at = COALESCE(started_at, $5), updated_at = $5 \
             WHERE id = $6 AND {}",
            state_in(InstanceState::RUNS_FROM),
        );
        let mut tx = self.pool.begin().await?;
        for (id, ip, ssh) in running {
            changed += sqlx::query(&sql)
                .bind(ip.clone())
                .bind(ssh.as_ref().map(|s| s.host.clone()))
                .bind(ssh.as_ref().map(|s| i64::from(s.port)))
                .bind(ssh.as_ref().map(|s| s.user.clone()))
                .bind(now_ms)
                .bind(&id.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// Which instances a release or an ending applies to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    Instance(&'a InstanceId),
    Batch(&'a BatchId),
    Group(&'a eci_core::GroupId),
}

impl Scope<'_> {
    /// The condition on `instances`, against parameter `$3`, and the value bound to it.
    fn condition(&self) -> (&'static str, &str) {
        match self {
            Scope::Instance(id) => ("id = $3", &id.0),
            Scope::Batch(id) => ("batch_id = $3", &id.0),
            Scope::Group(id) => ("batch_id IN (SELECT id FROM batches WHERE group_id = $3)", &id.0),
        }
    }
}

/// What a release ended or began to stop.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// The IDCs with instances to stop.
    pub stopping: BTreeSet<IdcId>,
    /// How many instances it released in each IDC, stopping or ended at once.
    pub per_idc: std::collections::BTreeMap<IdcId, u64>,
}

impl Released {
    /// How many instances it released.
    pub fn count(&self) -> u64 {
        self.per_idc.values().sum()
    }
}

/// Releases the live instances in `scope` as [`InstanceState::on_release`] decides: those with
/// nothing in the cluster yet end at once and give their capacity back; those with a Pod or VMI
/// turn `stopping` and keep their capacity until the instance manager has seen the object gone.
pub(crate) async fn release_instances(tx: &mut Tx<'_>, scope: Scope<'_>, now_ms: i64) -> Result<Released> {
    let (condition, value) = scope.condition();
    let stopping = sqlx::query(&format!(
        "UPDATE instances SET state = $1, updated_at = $2 WHERE {condition} AND {} RETURNING idc_id",
        state_in(&InstanceState::released_as(Release::Stop)),
    ))
    .bind(InstanceState::Stopping.as_str())
    .bind(now_ms)
    .bind(value)
    .fetch_all(&mut **tx)
    .await?;
    let mut released = Released::default();
    for row in &stopping {
        let idc = IdcId(row.try_get("idc_id")?);
        *released.per_idc.entry(idc.clone()).or_default() += 1;
        released.stopping.insert(idc);
    }
    let (_, ended) =
        mark_ended(tx, scope, &InstanceState::released_as(Release::EndNow), Ending::Terminated, now_ms)
            .await?;
    ledger::release_ended(tx, &ended, now_ms).await?;
    end_emptied_batches(tx, &ended, now_ms).await?;
    for e in &ended {
        *released.per_idc.entry(e.idc.clone()).or_default() += 1;
    }
    Ok(released)
}

/// How live instances end: released (`terminated`) or lost (`failed`, with the reason).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending<'a> {
    Terminated,
    /// Failed for this reason, having stopped at this moment (UTC ms), which may be before now.
    FailedAt(&'a str, i64),
}

/// Ends the instances in `scope` that are in one of the states `from` and gives their capacity
/// back. Writes first, so it is safe as the first statement of a transaction.
pub(crate) async fn end_instances(
    tx: &mut Tx<'_>,
    scope: Scope<'_>,
    from: &[InstanceState],
    ending: Ending<'_>,
    now_ms: i64,
) -> Result<Vec<InstanceId>> {
    let (ids, ended) = mark_ended(tx, scope, from, ending, now_ms).await?;
    ledger::release_ended(tx, &ended, now_ms).await?;
    end_emptied_batches(tx, &ended, now_ms).await?;
    Ok(ids)
}

/// Ends the active batches of `ended` instances that have no live instance left, as
/// [`BatchState::after_instances_end`] decides. A batch that ended already (the common case: its
/// instances end one by one after its release) costs one read by its id.
pub(crate) async fn end_emptied_batches(tx: &mut Tx<'_>, ended: &[Ended], now_ms: i64) -> Result<()> {
    let batches: BTreeSet<&BatchId> = ended.iter().map(|e| &e.batch).collect();
    for batch in batches {
        let state: String = sqlx::query_scalar("SELECT state FROM batches WHERE id = $1")
            .bind(&batch.0)
            .fetch_one(&mut **tx)
            .await?;
        let state: BatchState = word("batch state", &state)?;
        if !state.ends_with_its_instances() {
            continue;
        }
        let any = |condition: String| {
            format!("EXISTS (SELECT 1 FROM instances WHERE batch_id = $1 AND {condition})")
        };
        let row = sqlx::query(&format!(
            "SELECT CASE WHEN {} THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS live, \
                 CASE WHEN {} THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS ran, \
                 CASE WHEN {} THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS released",
            any(state_in(InstanceState::LIVE)),
            any("started_at IS NOT NULL".into()),
            any(state_in(&[InstanceState::Terminated])),
        ))
        .bind(&batch.0)
        .fetch_one(&mut **tx)
        .await?;
        let flag = |column: &str| -> Result<bool> { Ok(row.try_get::<i64, _>(column)? != 0) };
        if let Some(to) = state.after_instances_end(flag("live")?, flag("ran")?, flag("released")?) {
            sqlx::query("UPDATE batches SET state = $1, ended_at = $2 WHERE id = $3 AND state = $4")
                .bind(to.as_str())
                .bind(now_ms)
                .bind(&batch.0)
                .bind(state.as_str())
                .execute(&mut **tx)
                .await?;
            tracing::info!(batch.id = %batch, state = %to, "batch ended with its last instance");
        }
    }
    Ok(())
}

/// The state change of [`end_instances`] without the ledger's: the ended instances and what each
/// held, for a caller that gives back the capacity of many at once.
pub(crate) async fn mark_ended(
    tx: &mut Tx<'_>,
    scope: Scope<'_>,
    from: &[InstanceState],
    ending: Ending<'_>,
    now_ms: i64,
) -> Result<(Vec<InstanceId>, Vec<Ended>)> {
    debug_assert!(from.iter().all(|s| !s.is_ended()));
    let (state, reason, ended_ms) = match ending {
        Ending::Terminated => (InstanceState::Terminated, None, now_ms),
        Ending::FailedAt(reason, ended_ms) => (InstanceState::Failed, Some(reason), ended_ms),
    };
    let (condition, value) = scope.condition();
    let sql = format!(
        "UPDATE instances SET state = $1, ended_at = $5, updated_at = $2, \
             failure_reason = COALESCE($4, failure_reason) \
         WHERE {condition} AND {} \
         RETURNING id, batch_id, tenant_id, idc_id, cpu, memory, gpu, reservation_id",
        state_in(from),
    );
    let rows = sqlx::query(&sql)
        .bind(state.as_str())
        .bind(now_ms)
        .bind(value)
        .bind(reason)
        .bind(ended_ms)
        .fetch_all(&mut **tx)
        .await?;
    let mut ended = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(InstanceId(row.try_get("id")?));
        ended.push(Ended {
            batch: BatchId(row.try_get("batch_id")?),
            tenant: TenantId(row.try_get("tenant_id")?),
            idc: IdcId(row.try_get("idc_id")?),
            spec: Resources::new(
                MilliCpu(uint("cpu", row.try_get("cpu")?)?),
                MiB(uint("memory", row.try_get("memory")?)?),
                u32::try_from(uint("gpu", row.try_get("gpu")?)?).unwrap_or(u32::MAX),
            ),
            reservation: row.try_get::<Option<String>, _>("reservation_id")?.map(eci_core::ReservationId),
        });
    }
    Ok((ids, ended))
}
