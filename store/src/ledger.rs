//! Ledger statements shared by batches, instances and reservations. Each runs inside the caller's
//! transaction, and the conditional ones report a lost race instead of over-committing.

use std::collections::BTreeMap;

use eci_core::{BatchId, Column, IdcId, ReservationId, Resources, TenantId};
use sqlx::{Any, Transaction};

use crate::sql::int;
use crate::{Error, Result, Store};

/// Something the transaction meant to change was no longer as planned; re-plan and try again.
#[derive(Debug)]
pub struct LostRace;

pub type Tx<'c> = Transaction<'c, Any>;

/// How often an allocation is planned again after losing a race for capacity before giving up.
const PLANNING_ATTEMPTS: usize = 8;

impl Store {
    /// Runs `attempt` (read a snapshot, let core decide, apply the decision in one transaction)
    /// until it does not lose a race to a concurrent request, at most [`PLANNING_ATTEMPTS`] times.
    /// The one retry loop of every allocation, so batches and reservations re-plan alike.
    pub(crate) async fn replanning<T, Attempt>(&self, mut attempt: impl FnMut() -> Attempt) -> Result<T>
    where
        Attempt: Future<Output = Result<Result<T, LostRace>>>,
    {
        for n in 0..PLANNING_ATTEMPTS {
            match attempt().await? {
                Ok(done) => return Ok(done),
                Err(LostRace) => tracing::debug!(attempt = n, "lost a race for capacity; planning again"),
            }
        }
        Err(Error::Contention)
    }
}

/// The columns of `idcs` a ledger column is kept in: `{prefix}_cpu`, `{prefix}_memory`, `{prefix}_gpu`.
fn prefix(column: Column) -> &'static str {
    match column {
        Column::Reserved => "reserved",
        Column::Allocated => "allocated",
    }
}

fn binds(r: &Resources) -> [i64; 3] {
    [int(r.cpu.0), int(r.memory.0), i64::from(r.gpu)]
}

/// Takes `amount` of an active IDC's free capacity into `allocated` or `reserved`.
pub async fn take_free(
    tx: &mut Tx<'_>,
    idc: &IdcId,
    amount: &Resources,
    column: Column,
) -> Result<Result<(), LostRace>> {
    let [cpu, memory, gpu] = binds(amount);
    let column = prefix(column);
    let sql = format!(
        "UPDATE idcs SET {column}_cpu = {column}_cpu + $1, {column}_memory = {column}_memory + $2, \
             {column}_gpu = {column}_gpu + $3 \
         WHERE id = $4 AND status = 'active' \
           AND allocated_cpu + reserved_cpu + $1 <= total_cpu \
           AND allocated_memory + reserved_memory + $2 <= total_memory \
           AND allocated_gpu + reserved_gpu + $3 <= total_gpu"
    );
    let done = sqlx::query(&sql).bind(cpu).bind(memory).bind(gpu).bind(&idc.0).execute(&mut **tx).await?;
    Ok(if done.rows_affected() == 1 { Ok(()) } else { Err(LostRace) })
}

/// Moves `amount` between an IDC's `reserved` and `allocated` columns (`from` -> `to`).
pub async fn shift(
    tx: &mut Tx<'_>,
    idc: &IdcId,
    amount: &Resources,
    from: Column,
    to: Column,
) -> Result<Result<(), LostRace>> {
    let [cpu, memory, gpu] = binds(amount);
    let (from, to) = (prefix(from), prefix(to));
    let sql = format!(
        "UPDATE idcs SET {from}_cpu = {from}_cpu - $1, {from}_memory = {from}_memory - $2, {from}_gpu = {from}_gpu - $3, \
             {to}_cpu = {to}_cpu + $1, {to}_memory = {to}_memory + $2, {to}_gpu = {to}_gpu + $3 \
         WHERE id = $4 AND {from}_cpu >= $1 AND {from}_memory >= $2 AND {from}_gpu >= $3"
    );
    let done = sqlx::query(&sql).bind(cpu).bind(memory).bind(gpu).bind(&idc.0).execute(&mut **tx).await?;
    Ok(if done.rows_affected() == 1 { Ok(()) } else { Err(LostRace) })
}

/// Gives `amount` held in `column` back to the IDC's free capacity.
pub async fn give_back(tx: &mut Tx<'_>, idc: &IdcId, amount: &Resources, column: Column) -> Result<()> {
    let [cpu, memory, gpu] = binds(amount);
    let column = prefix(column);
    let sql = format!(
        "UPDATE idcs SET {column}_cpu = {column}_cpu - $1, {column}_memory = {column}_memory - $2, \
             {column}_gpu = {column}_gpu - $3 WHERE id = $4"
    );
    sqlx::query(&sql).bind(cpu).bind(memory).bind(gpu).bind(&idc.0).execute(&mut **tx).await?;
    Ok(())
}

/// Charges (or with negative amounts, refunds) a tenant's usage, refusing to pass its quota.
pub async fn charge_tenant(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    instances: i64,
    cpu: i64,
) -> Result<Result<(), LostRace>> {
    let done = sqlx::query(
        "UPDATE tenants SET used_instances = used_instances + $1, used_cpu = used_cpu + $2 \
         WHERE id = $3 AND ($1 <= 0 OR max_instances IS NULL OR used_instances + $1 <= max_instances) \
           AND ($2 <= 0 OR max_cpu IS NULL OR used_cpu + $2 <= max_cpu)",
    )
    .bind(instances)
    .bind(cpu)
    .bind(&tenant.0)
    .execute(&mut **tx)
    .await?;
    Ok(if done.rows_affected() == 1 { Ok(()) } else { Err(LostRace) })
}

/// Locks an active reservation's row for the rest of the transaction; false if it is not active.
pub async fn lock_active_reservation(tx: &mut Tx<'_>, id: &ReservationId, now_ms: i64) -> Result<bool> {
    let done = sqlx::query("UPDATE reservations SET updated_at = $1 WHERE id = $2 AND state = 'active'")
        .bind(now_ms)
        .bind(&id.0)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// One ended instance's claim on the ledger.
#[derive(Debug)]
pub struct Ended {
    pub batch: BatchId,
    pub tenant: TenantId,
    pub idc: IdcId,
    pub spec: Resources,
    pub reservation: Option<ReservationId>,
}

/// Gives the capacity of ended instances back: to their reservation while it is active (so the owner
/// can use it again), otherwise to the pool; and takes them off their tenants' usage.
pub async fn release_ended(tx: &mut Tx<'_>, ended: &[Ended], now_ms: i64) -> Result<()> {
    let mut by_tenant: BTreeMap<&TenantId, (i64, i64)> = BTreeMap::new();
    let mut by_reservation: BTreeMap<(&ReservationId, &IdcId), (u64, Resources)> = BTreeMap::new();
    let mut to_pool: BTreeMap<&IdcId, Resources> = BTreeMap::new();
    for e in ended {
        let t = by_tenant.entry(&e.tenant).or_default();
        t.0 -= 1;
        t.1 -= int(e.spec.cpu.0);
        match &e.reservation {
            Some(r) => {
                let slot = by_reservation.entry((r, &e.idc)).or_insert((0, Resources::ZERO));
                slot.0 += 1;
                slot.1 = slot.1 + e.spec;
            }
            None => {
                let line = to_pool.entry(&e.idc).or_insert(Resources::ZERO);
                *line = *line + e.spec;
            }
        }
    }
    for (tenant, (instances, cpu)) in by_tenant {
        // A refund never trips the quota condition, so it cannot lose a race.
        let _ = charge_tenant(tx, tenant, instances, cpu).await?;
    }
    let mut active: BTreeMap<&ReservationId, bool> = BTreeMap::new();
    let mut to_reservation: BTreeMap<&IdcId, Resources> = BTreeMap::new();
    for ((reservation, idc), (n, amount)) in by_reservation {
        let is_active = match active.get(reservation) {
            Some(&a) => a,
            None => {
                let a = lock_active_reservation(tx, reservation, now_ms).await?;
                active.insert(reservation, a);
                a
            }
        };
        if is_active {
            sqlx::query(
                "UPDATE reservation_slots SET used = used - $1 WHERE reservation_id = $2 AND idc_id = $3",
            )
            .bind(int(n))
            .bind(&reservation.0)
            .bind(&idc.0)
            .execute(&mut **tx)
            .await?;
            let line = to_reservation.entry(idc).or_insert(Resources::ZERO);
            *line = *line + amount;
        } else {
            let line = to_pool.entry(idc).or_insert(Resources::ZERO);
            *line = *line + amount;
        }
    }
    // IDC rows are always touched in id order, so concurrent transactions cannot deadlock on them.
    let mut idcs: Vec<&IdcId> = to_pool.keys().chain(to_reservation.keys()).copied().collect();
    idcs.sort();
    idcs.dedup();
    for idc in idcs {
        if let Some(amount) = to_reservation.get(idc) {
            // Shifting back what was drawn cannot fail: it is exactly what the instances hold.
            let _ = shift(tx, idc, amount, Column::Allocated, Column::Reserved).await?;
        }
        if let Some(amount) = to_pool.get(idc) {
            give_back(tx, idc, amount, Column::Allocated).await?;
        }
    }
    Ok(())
}
