//! IDCs and their lines of the capacity ledger.

use chrono::{DateTime, Utc};
use eci_core::fleet::LinkNews;
use eci_core::{
    Area, Fleet, Idc, IdcId, IdcLedger, IdcStatus, InstanceState, MiB, MilliCpu, Resources, Snapshot,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ledger::Tx;
use crate::sql::{int, millis, state_in, uint, word, words};
use crate::{Error, Result, Store};

const IDC_COLUMNS: &str = "id, name, region, province, city, carriers, runtimes, status, kube_context, \
    rich_runtime_class, ssh_ingress_host, \
    total_cpu, total_memory, total_gpu, reserved_cpu, reserved_memory, reserved_gpu, \
    allocated_cpu, allocated_memory, allocated_gpu";

fn resources(row: &AnyRow, prefix: &str) -> Result<Resources> {
    let get = |col: &str| -> Result<u64> {
        uint("ledger", row.try_get::<i64, _>(format!("{prefix}_{col}").as_str())?)
    };
    Ok(Resources::new(
        MilliCpu(get("cpu")?),
        MiB(get("memory")?),
        u32::try_from(get("gpu")?).unwrap_or(u32::MAX),
    ))
}

fn idc_from_row(row: &AnyRow) -> Result<(Idc, IdcLedger)> {
    let idc = Idc {
        id: IdcId(row.try_get("id")?),
        name: row.try_get("name")?,
        area: Area {
            region: row.try_get("region")?,
            province: row.try_get("province")?,
            city: row.try_get("city")?,
        },
        carriers: words("carrier", &row.try_get::<String, _>("carriers")?)?,
        runtimes: words("runtime", &row.try_get::<String, _>("runtimes")?)?,
        status: word("IDC status", &row.try_get::<String, _>("status")?)?,
        kube_context: row.try_get("kube_context")?,
        rich_runtime_class: row.try_get("rich_runtime_class")?,
        ssh_ingress_host: row.try_get("ssh_ingress_host")?,
        capacity: resources(row, "total")?,
    };
    let line = IdcLedger {
        total: idc.capacity,
        reserved: resources(row, "reserved")?,
        allocated: resources(row, "allocated")?,
    };
    Ok((idc, line))
}

/// How stale the cached area codes may be after another replica changed an IDC.
pub const AREA_CODES_TTL: std::time::Duration = std::time::Duration::from_secs(5);

fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

impl Store {
    /// Adds an IDC or updates its description and size, keeping what its ledger line holds.
    pub async fn upsert_idc(&self, idc: &Idc, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO idcs (id, name, region, province, city, carriers, runtimes, status, kube_context, \
                 total_cpu, total_memory, total_gpu, updated_at, rich_runtime_class, ssh_ingress_host) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (id) DO UPDATE SET name = $2, region = $3, province = $4, city = $5, carriers = $6, \
                 runtimes = $7, status = $8, kube_context = $9, total_cpu = $10, total_memory = $11, \
                 total_gpu = $12, updated_at = $13, rich_runtime_class = $14, ssh_ingress_host = $15",
        )
        .bind(&idc.id.0)
        .bind(&idc.name)
        .bind(&idc.area.region)
        .bind(&idc.area.province)
        .bind(&idc.area.city)
        .bind(joined(&idc.carriers))
        .bind(joined(&idc.runtimes))
        .bind(idc.status.as_str())
        .bind(&idc.kube_context)
        .bind(int(idc.capacity.cpu.0))
        .bind(int(idc.capacity.memory.0))
        .bind(i64::from(idc.capacity.gpu))
        .bind(millis(now))
        .bind(&idc.rich_runtime_class)
        .bind(&idc.ssh_ingress_host)
        .execute(&self.pool)
        .await?;
        self.area_codes.invalidate(&());
        Ok(())
    }

    /// Every region, province and city code of the fleet, for validating area selectors without a
    /// read of every IDC per request.
    pub async fn area_codes(&self) -> Result<std::sync::Arc<std::collections::BTreeSet<String>>> {
        if let Some(codes) = self.area_codes.get(&()) {
            return Ok(codes);
        }
        let rows = sqlx::query("SELECT region, province, city FROM idcs").fetch_all(&self.pool).await?;
        let mut codes = std::collections::BTreeSet::new();
        for row in rows {
            for level in ["region", "province", "city"] {
                codes.insert(row.try_get::<String, _>(level)?);
            }
        }
        let codes = std::sync::Arc::new(codes);
        self.area_codes.insert((), codes.clone());
        Ok(codes)
    }

    /// Loads a fleet file into the store: new IDCs are added, known ones updated. IDCs that the file
    /// no longer names are left alone, since their instances may still be running.
    pub async fn sync_fleet(&self, fleet: &Fleet, now: DateTime<Utc>) -> Result<()> {
        fleet.validate().map_err(|e| Error::Corrupt { what: "fleet", why: e.to_string() })?;
        for idc in &fleet.idcs {
            self.upsert_idc(idc, now).await?;
        }
        Ok(())
    }

    /// Every IDC with its ledger line, ordered by id.
    pub async fn list_idcs(&self) -> Result<Vec<(Idc, IdcLedger)>> {
        let rows =
            sqlx::query(&format!("SELECT {IDC_COLUMNS} FROM idcs ORDER BY id")).fetch_all(&self.pool).await?;
        rows.iter().map(idc_from_row).collect()
    }

    /// One IDC with its ledger line.
    pub async fn get_idc(&self, id: &IdcId) -> Result<(Idc, IdcLedger)> {
        let row = sqlx::query(&format!("SELECT {IDC_COLUMNS} FROM idcs WHERE id = $1"))
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound { what: "IDC", id: id.0.clone() })?;
        idc_from_row(&row)
    }

    /// Marks an IDC active, draining or disconnected. Nothing it runs is touched.
    pub async fn set_idc_status(&self, id: &IdcId, status: IdcStatus, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query("UPDATE idcs SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(millis(now))
            .bind(&id.0)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "IDC", id: id.0.clone() });
        }
        Ok(())
    }

    /// The fleet and its ledger as they stand, for the planner.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        for (idc, line) in self.list_idcs().await? {
            snapshot.ledger.idcs.insert(idc.id.clone(), line);
            snapshot.fleet.idcs.push(idc);
        }
        Ok(snapshot)
    }
}

impl Store {
    /// The IDC's cluster cannot be reached: the IDC turns `disconnected` (unless an admin is draining
    /// it) and its created instances `unknown`. Nothing is failed, re-created or released: edge
    /// autonomy keeps them running, allocated and billed. A `stopping` instance stays so: its release
    /// still has to reach the cluster. Returns how many instances turned unknown.
    pub async fn mark_idc_disconnected(&self, id: &IdcId, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        apply_link_news(&mut tx, id, LinkNews::Lost, now).await?;
        let done = sqlx::query(&format!(
            "UPDATE instances SET state = $1, updated_at = $2 WHERE idc_id = $3 AND {}",
            state_in(InstanceState::UNKNOWN_FROM)
        ))
        .bind(InstanceState::Unknown.as_str())
        .bind(millis(now))
        .bind(&id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The IDC's cluster answers again: a `disconnected` IDC turns `active`. Its `unknown` instances
    /// stay so until the instance manager has looked at the cluster again.
    pub async fn mark_idc_reconnected(&self, id: &IdcId, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        apply_link_news(&mut tx, id, LinkNews::Restored, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Moves the IDC's status as [`IdcStatus::on_link`] decides for `news`, on the condition that it is
/// still in the status the move is from.
async fn apply_link_news(tx: &mut Tx<'_>, id: &IdcId, news: LinkNews, now: DateTime<Utc>) -> Result<()> {
    for (from, to) in IdcStatus::moved_by(news) {
        sqlx::query("UPDATE idcs SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(millis(now))
            .bind(&id.0)
            .bind(from.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
