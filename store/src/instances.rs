//! Instances: reads, listing, and ending one.

use chrono::{DateTime, Utc};
use eci_core::{
    Area, BatchId, Carrier, IdcId, Instance, InstanceId, InstanceState, MiB, MilliCpu, Resources,
    SshEndpoint, TenantId,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::batches::{Ending, Page, end_instances, release_instances};
use crate::sql::{millis, opt_time, time, uint, word};
use crate::{Error, Result, Store};

/// What listing instances may filter on.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub batch_id: Option<BatchId>,
    pub state: Option<InstanceState>,
    /// An area code at any level.
    pub area: Option<String>,
    pub carrier: Option<Carrier>,
}

const INSTANCE_COLUMNS: &str = "id, batch_id, tenant_id, state, cpu, memory, gpu, runtime, idc_id, region, province, \
    city, carrier, reservation_id, ip, ssh_host, ssh_port, ssh_user, failure_reason, created_at, updated_at, \
    started_at, ended_at";

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
        let mut query = sqlx::query(&sql).bind(&tenant.0).bind(cursor.unwrap_or(""));
        for b in &binds {
            query = query.bind(b);
        }
        let rows = query.bind(i64::from(limit) + 1).fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let items = rows.iter().take(limit as usize).map(instance_from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if more { items.last().map(|i| i.id.0.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Releases one instance: it ends at once if nothing of it exists in the cluster yet, otherwise
    /// it turns `stopping` until the instance manager has removed its Pod or VMI. Releasing an
    /// instance that is stopping or ended changes nothing.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, instance.id = %id))]
    pub async fn release_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        now: DateTime<Utc>,
    ) -> Result<Instance> {
        self.get_instance(tenant, id).await?;
        let mut tx = self.pool.begin().await?;
        let stopping = release_instances(&mut tx, "id = $3", &id.0, millis(now)).await?;
        tx.commit().await?;
        self.signals.raise(&stopping);
        self.get_instance(tenant, id).await
    }
}

/// An instance the instance manager must make real, with the request its objects are built from.
#[derive(Debug, Clone)]
pub struct Desired {
    pub instance: Instance,
    pub request: eci_core::BatchRequest,
}

/// What a cluster says about an instance's Pod or VMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The object exists and is starting.
    Creating,
    Running {
        ip: Option<String>,
        ssh: Option<SshEndpoint>,
    },
    /// The object failed for good (image pull error, crash loop, unschedulable for too long...).
    Failed {
        reason: String,
        /// When the cluster says it stopped, if it says: an IDC that was cut off reports the true
        /// end of what died meanwhile, and billing stops there rather than when the news arrived.
        ended_at: Option<DateTime<Utc>>,
    },
    /// The object is gone. For a `stopping` instance that is the end it waited for (`terminated`);
    /// for any other live instance someone or something removed it (`failed`).
    Gone,
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
                requests.insert(BatchId(row.try_get("id")?), request);
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

    /// The live (not ended) instances of one IDC and their states.
    pub async fn live_in_idc(
        &self,
        idc: &IdcId,
    ) -> Result<std::collections::BTreeMap<InstanceId, InstanceState>> {
        let rows = sqlx::query(
            "SELECT id, state FROM instances WHERE idc_id = $1 AND state NOT IN ('terminated', 'failed')",
        )
        .bind(&idc.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    InstanceId(row.try_get("id")?),
                    word("instance state", &row.try_get::<String, _>("state")?)?,
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
        if current.state.is_ended() {
            return Ok(None);
        }
        let now_ms = millis(now);
        if current.state == InstanceState::Stopping {
            // Only the object's removal moves a stopping instance; what it did meanwhile is moot.
            if *observed != Observed::Gone {
                return Ok(None);
            }
            let mut tx = self.pool.begin().await?;
            let ended =
                end_instances(&mut tx, "id = $3 AND state = 'stopping'", &id.0, Ending::Terminated, now_ms)
                    .await?;
            tx.commit().await?;
            return Ok((!ended.is_empty()).then_some(InstanceState::Terminated));
        }
        match observed {
            Observed::Creating => {
                if current.state != InstanceState::Pending && current.state != InstanceState::Unknown {
                    return Ok(None);
                }
                current.state.transition(InstanceState::Creating)?;
                let done = sqlx::query(
                    "UPDATE instances SET state = 'creating', updated_at = $1 WHERE id = $2 AND state = $3",
                )
                .bind(now_ms)
                .bind(&id.0)
                .bind(current.state.as_str())
                .execute(&self.pool)
                .await?;
                Ok((done.rows_affected() == 1).then_some(InstanceState::Creating))
            }
            Observed::Running { ip, ssh } => {
                let changed = self.record_running(&[(id.clone(), ip.clone(), ssh.clone())], now).await?;
                Ok((changed == 1).then_some(InstanceState::Running))
            }
            Observed::Failed { reason, ended_at } => {
                // Never before it started running, never after now.
                let started_ms = current.started_at.map(millis);
                let ended_ms = ended_at.map(millis).map(|e| e.max(started_ms.unwrap_or(e)).min(now_ms));
                self.fail(id, reason, ended_ms.unwrap_or(now_ms), now_ms).await
            }
            Observed::Gone => {
                self.fail(id, "its Pod or VMI disappeared from the cluster", now_ms, now_ms).await
            }
        }
    }

    /// Records that the objects of these pending (or unknown) instances now exist in their cluster:
    /// they turn `creating`, in one statement per 500. Returns how many changed.
    pub async fn record_created(&self, ids: &[InstanceId], now: DateTime<Utc>) -> Result<u64> {
        InstanceState::Pending.transition(InstanceState::Creating)?;
        let mut changed = 0;
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE instances SET state = 'creating', updated_at = {} \
                 WHERE state IN ('pending', 'unknown') AND id IN ({})",
                crate::sql::bulk_placeholders(self.backend, 1, 1),
                crate::sql::bulk_placeholders(self.backend, 2, chunk.len()),
            );
            let mut query = sqlx::query(&sql).bind(millis(now));
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
        // A manager that restarted may see a Pod running before it recorded `creating`.
        InstanceState::Pending.transition(InstanceState::Creating)?;
        for from in [InstanceState::Creating, InstanceState::Unknown] {
            from.transition(InstanceState::Running)?;
        }
        let now_ms = millis(now);
        let mut changed = 0;
        let mut tx = self.pool.begin().await?;
        for (id, ip, ssh) in running {
            changed += sqlx::query(
                "UPDATE instances SET state = 'running', ip = $1, ssh_host = $2, ssh_port = $3, ssh_user = $4, \
                     started_at = COALESCE(started_at, $5), updated_at = $5 \
                 WHERE id = $6 AND state IN ('pending', 'creating', 'unknown')",
            )
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

    async fn fail(
        &self,
        id: &InstanceId,
        reason: &str,
        ended_ms: i64,
        now_ms: i64,
    ) -> Result<Option<InstanceState>> {
        let mut tx = self.pool.begin().await?;
        let ended =
            end_instances(&mut tx, "id = $3", &id.0, Ending::FailedAt(reason, ended_ms), now_ms).await?;
        tx.commit().await?;
        if !ended.is_empty() {
            tracing::info!(reason, "instance failed");
        }
        Ok((!ended.is_empty()).then_some(InstanceState::Failed))
    }
}
