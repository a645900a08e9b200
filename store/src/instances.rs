//! Instances: reads, listing, and ending one.

use chrono::{DateTime, Utc};
use eci_core::{
    Area, BatchId, Carrier, IdcId, Instance, InstanceId, InstanceState, MiB, MilliCpu, Resources,
    SshEndpoint, TenantId,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::batches::{Page, end_instances};
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

    /// Ends one instance and gives its capacity back. Ending an ended instance changes nothing.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, instance.id = %id))]
    pub async fn release_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        now: DateTime<Utc>,
    ) -> Result<Instance> {
        self.get_instance(tenant, id).await?;
        let mut tx = self.pool.begin().await?;
        end_instances(&mut tx, "id = $3", &id.0, millis(now)).await?;
        tx.commit().await?;
        self.get_instance(tenant, id).await
    }
}
