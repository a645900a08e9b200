//! IDCs and their lines of the capacity ledger.

use chrono::{DateTime, Utc};
use eci_core::alerts::{Alert, AlertName};
use eci_core::capacity::{self, ClusterCapacity};
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
    rich_runtime_class, ssh_ingress_host, headroom_percent, bound_cpu, bound_memory, bound_gpu, \
    total_cpu, total_memory, total_gpu, reserved_cpu, reserved_memory, reserved_gpu, \
    allocated_cpu, allocated_memory, allocated_gpu, cluster_nodes, cluster_schedulable_nodes, \
    cluster_cpu, cluster_memory, cluster_gpu, foreign_cpu, foreign_memory, foreign_gpu, node_shapes, \
    capacity_read_at";

/// An IDC with its ledger line and what its cluster was last read to offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdcReport {
    /// Its description; `capacity` is the fleet file's bound.
    pub idc: Idc,
    /// Its ledger line; `total` is what it sells.
    pub line: IdcLedger,
    /// What its cluster offered when last read, and when; `None` before the first read.
    pub cluster: Option<(ClusterCapacity, DateTime<Utc>)>,
}

impl IdcReport {
    /// What the IDC sells, from its bound, its headroom and its cluster's last reading.
    fn sellable(&self) -> Resources {
        capacity::sellable(
            self.idc.capacity,
            self.cluster.as_ref().map(|(c, _)| c),
            self.idc.headroom_percent,
        )
    }
}

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

fn nullable_resources(row: &AnyRow, prefix: &str) -> Result<Option<Resources>> {
    if row.try_get::<Option<i64>, _>(format!("{prefix}_cpu").as_str())?.is_none() {
        return Ok(None);
    }
    resources(row, prefix).map(Some)
}

/// Node shapes as kept: `cpu/memory/gpu` triples joined by `,`.
fn shapes_text(shapes: &[Resources]) -> String {
    shapes.iter().map(|s| format!("{}/{}/{}", s.cpu.0, s.memory.0, s.gpu)).collect::<Vec<_>>().join(",")
}

fn shapes_from_text(text: &str) -> Result<Vec<Resources>> {
    let corrupt =
        || Error::Corrupt { what: "node shapes", why: format!("`{text}` is not cpu/memory/gpu triples") };
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|shape| {
            let mut parts = shape.split('/').map(str::parse::<u64>);
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(Ok(cpu)), Some(Ok(memory)), Some(Ok(gpu)), None) => {
                    Ok(Resources::new(MilliCpu(cpu), MiB(memory), u32::try_from(gpu).map_err(|_| corrupt())?))
                }
                _ => Err(corrupt()),
            }
        })
        .collect()
}

fn cluster_from_row(row: &AnyRow) -> Result<Option<(ClusterCapacity, DateTime<Utc>)>> {
    let Some(read_at) = row.try_get::<Option<i64>, _>("capacity_read_at")? else { return Ok(None) };
    let count = |col: &str| -> Result<u32> {
        let n = uint("cluster", row.try_get::<Option<i64>, _>(col)?.unwrap_or(0))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    };
    let capacity = ClusterCapacity {
        nodes: count("cluster_nodes")?,
        schedulable_nodes: count("cluster_schedulable_nodes")?,
        allocatable: nullable_resources(row, "cluster")?.unwrap_or_default(),
        foreign: nullable_resources(row, "foreign")?.unwrap_or_default(),
        node_shapes: shapes_from_text(&row.try_get::<Option<String>, _>("node_shapes")?.unwrap_or_default())?,
    };
    let read_at = DateTime::from_timestamp_millis(read_at)
        .ok_or_else(|| Error::Corrupt { what: "capacity_read_at", why: read_at.to_string() })?;
    Ok(Some((capacity, read_at)))
}

fn report_from_row(row: &AnyRow) -> Result<IdcReport> {
    let (idc, line) = idc_from_row(row)?;
    Ok(IdcReport { idc, line, cluster: cluster_from_row(row)? })
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
        headroom_percent: u8::try_from(uint("headroom", row.try_get::<i64, _>("headroom_percent")?)?)
            .unwrap_or(capacity::MAX_HEADROOM_PERCENT),
        capacity: resources(row, "bound")?,
    };
    let line = IdcLedger {
        total: resources(row, "total")?,
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
    /// Adds an IDC or updates its description and bound, keeping what its ledger line holds; what
    /// it sells follows the new bound and headroom at once.
    pub async fn upsert_idc(&self, idc: &Idc, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO idcs (id, name, region, province, city, carriers, runtimes, status, kube_context, \
                 bound_cpu, bound_memory, bound_gpu, updated_at, rich_runtime_class, ssh_ingress_host, \
                 headroom_percent, total_cpu, total_memory, total_gpu) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, 0, 0) \
             ON CONFLICT (id) DO UPDATE SET name = $2, region = $3, province = $4, city = $5, carriers = $6, \
                 runtimes = $7, status = $8, kube_context = $9, bound_cpu = $10, bound_memory = $11, \
                 bound_gpu = $12, updated_at = $13, rich_runtime_class = $14, ssh_ingress_host = $15, \
                 headroom_percent = $16",
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
        .bind(i64::from(idc.headroom_percent))
        .execute(&mut *tx)
        .await?;
        resell(&mut tx, &idc.id).await?;
        tx.commit().await?;
        self.area_codes.invalidate(&());
        Ok(())
    }

    /// Records what an IDC's cluster offers, read just now, and sells that within the IDC's bound
    /// and headroom. Nothing allocated or reserved is touched: an IDC that now sells less than it
    /// promised shows it ([`IdcLedger::short`]) and takes nothing new. Returns the IDC as it
    /// stands after.
    pub async fn record_cluster_capacity(
        &self,
        id: &IdcId,
        cluster: &ClusterCapacity,
        now: DateTime<Utc>,
    ) -> Result<IdcReport> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE idcs SET cluster_nodes = $1, cluster_schedulable_nodes = $2, cluster_cpu = $3, \
                 cluster_memory = $4, cluster_gpu = $5, foreign_cpu = $6, foreign_memory = $7, foreign_gpu = $8, \
                 node_shapes = $9, capacity_read_at = $10 WHERE id = $11",
        )
        .bind(i64::from(cluster.nodes))
        .bind(i64::from(cluster.schedulable_nodes))
        .bind(int(cluster.allocatable.cpu.0))
        .bind(int(cluster.allocatable.memory.0))
        .bind(i64::from(cluster.allocatable.gpu))
        .bind(int(cluster.foreign.cpu.0))
        .bind(int(cluster.foreign.memory.0))
        .bind(i64::from(cluster.foreign.gpu))
        .bind(shapes_text(&cluster.node_shapes))
        .bind(millis(now))
        .bind(&id.0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "IDC", id: id.0.clone() });
        }
        let report = resell(&mut tx, id).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Every IDC with its ledger line and its cluster's last reading, ordered by id.
    pub async fn idc_reports(&self) -> Result<Vec<IdcReport>> {
        let rows =
            sqlx::query(&format!("SELECT {IDC_COLUMNS} FROM idcs ORDER BY id")).fetch_all(&self.pool).await?;
        rows.iter().map(report_from_row).collect()
    }

    /// One IDC with its ledger line and its cluster's last reading.
    pub async fn idc_report(&self, id: &IdcId) -> Result<IdcReport> {
        report_of(&self.pool, id).await
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
        Ok(self.idc_reports().await?.into_iter().map(|r| (r.idc, r.line)).collect())
    }

    /// One IDC with its ledger line.
    pub async fn get_idc(&self, id: &IdcId) -> Result<(Idc, IdcLedger)> {
        let report = self.idc_report(id).await?;
        Ok((report.idc, report.line))
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
        for IdcReport { idc, line, cluster } in self.idc_reports().await? {
            snapshot.ledger.idcs.insert(idc.id.clone(), line);
            if let Some((cluster, _)) = cluster {
                snapshot.ledger.node_shapes.insert(idc.id.clone(), cluster.node_shapes);
            }
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
        let turned = apply_link_news(&mut tx, id, LinkNews::Lost, now).await?;
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
        if turned > 0 {
            let unknown = done.rows_affected();
            self.raise(Alert::new(
                AlertName::IdcDisconnected,
                now,
                &[("idc", &id.0)],
                format!(
                    "the cluster of IDC {id} stopped answering: the IDC is disconnected and its {unknown} live \
                     instance(s) unknown; nothing is failed or re-created, and they are reconciled when it answers"
                ),
            ));
        }
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

/// One IDC as `executor` sees it: the pool, or a transaction after its own writes.
async fn report_of<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &IdcId,
) -> Result<IdcReport> {
    let row = sqlx::query(&format!("SELECT {IDC_COLUMNS} FROM idcs WHERE id = $1"))
        .bind(&id.0)
        .fetch_optional(executor)
        .await?
        .ok_or_else(|| Error::NotFound { what: "IDC", id: id.0.clone() })?;
    report_from_row(&row)
}

/// Sets what the IDC sells (the `total` its ledger's conditional updates check) from its bound,
/// headroom and last reading as the transaction sees them; returns the IDC as it then stands.
async fn resell(tx: &mut Tx<'_>, id: &IdcId) -> Result<IdcReport> {
    let mut report = report_of(&mut **tx, id).await?;
    report.line.total = report.sellable();
    let total = report.line.total;
    sqlx::query("UPDATE idcs SET total_cpu = $1, total_memory = $2, total_gpu = $3 WHERE id = $4")
        .bind(int(total.cpu.0))
        .bind(int(total.memory.0))
        .bind(i64::from(total.gpu))
        .bind(&id.0)
        .execute(&mut **tx)
        .await?;
    Ok(report)
}

/// Moves the IDC's status as [`IdcStatus::on_link`] decides for `news`, on the condition that it is
/// still in the status the move is from.
/// Moves the IDC's status as `news` says; returns how many moves there were (0: it was there already).
async fn apply_link_news(tx: &mut Tx<'_>, id: &IdcId, news: LinkNews, now: DateTime<Utc>) -> Result<u64> {
    let mut moved = 0;
    for (from, to) in IdcStatus::moved_by(news) {
        moved += sqlx::query("UPDATE idcs SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(millis(now))
            .bind(&id.0)
            .bind(from.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(moved)
}
