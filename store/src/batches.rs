//! Batches: creation with placement and capacity allocation in one transaction, reads, release.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use eci_core::placement::{Slot, plan_slots};
use eci_core::{
    Batch, BatchId, BatchRequest, BatchState, Fleet, IdcId, Instance, InstanceId, InstanceState, PlacedArea,
    PlacementError, Plan, Reservation, ReservationState, TenantId,
};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ledger::{self, Ended, LostRace, Tx};
use crate::sql::{
    bulk_placeholders, int, json, millis, new_id, opt_time, placeholders, time, to_json, uint, word,
};
use crate::{Backend, Error, Result, Store};

/// How often a batch is re-planned after losing a race for capacity before giving up.
const PLACEMENT_ATTEMPTS: usize = 8;

/// Rows per multi-row INSERT; well under both backends' parameter limits.
const INSERT_CHUNK: usize = 400;

/// What listing batches may filter on.
#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    pub state: Option<BatchState>,
    pub label: Option<(String, String)>,
}

/// A page of a listing and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The outcome of creating a batch: new, or the one an earlier request with the same key made.
#[derive(Debug, Clone)]
pub struct Created {
    pub batch: Batch,
    pub replayed: bool,
}

/// Where each part of a batch goes, and whether it draws on the batch's reservation.
struct Allocation {
    from_reservation: Plan,
    from_pool: Plan,
}

impl Allocation {
    fn placed(&self) -> u64 {
        self.from_reservation.placed() + self.from_pool.placed()
    }
}

fn request_hash(request: &BatchRequest) -> String {
    hex::encode(Sha256::digest(to_json(request).as_bytes()))
}

const BATCH_COLUMNS: &str =
    "id, tenant_id, state, count, request, placement, created_at, expires_at, ended_at, request_hash";

fn batch_from_row(row: &AnyRow, counts: BTreeMap<InstanceState, u64>) -> Result<Batch> {
    Ok(Batch {
        id: BatchId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        state: word("batch state", &row.try_get::<String, _>("state")?)?,
        request: json("batch request", &row.try_get::<String, _>("request")?)?,
        count: uint("batch count", row.try_get("count")?)?,
        placement: json("batch placement", &row.try_get::<String, _>("placement")?)?,
        counts,
        created_at: time(row.try_get("created_at")?)?,
        expires_at: opt_time(row.try_get("expires_at")?)?,
        ended_at: opt_time(row.try_get("ended_at")?)?,
    })
}

/// Sums a plan by city and carrier, the only placement detail customers see.
fn placed_areas(fleet: &Fleet, plans: &[&Plan]) -> Vec<PlacedArea> {
    let mut sums: BTreeMap<(String, String, String, eci_core::Carrier), u64> = BTreeMap::new();
    for p in plans.iter().flat_map(|p| p.placements.iter()) {
        if let Some(idc) = fleet.idcs.iter().find(|i| i.id == p.idc) {
            let a = &idc.area;
            *sums.entry((a.region.clone(), a.province.clone(), a.city.clone(), p.carrier)).or_default() +=
                p.count;
        }
    }
    sums.into_iter()
        .map(|((region, province, city, carrier), count)| PlacedArea {
            region,
            province,
            city,
            carrier,
            count,
        })
        .collect()
}

impl Store {
    /// Places and stores a batch with all its instances in `pending`, allocating their capacity in
    /// the same transaction. With an idempotency key, a repeat of the same request returns the batch
    /// the first one made, and a different request under the same key is refused.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, count = request.count))]
    pub async fn create_batch(
        &self,
        tenant: &TenantId,
        request: &BatchRequest,
        idempotency_key: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        let hash = request_hash(request);
        if let Some(created) = self.replay(tenant, idempotency_key, &hash).await? {
            return Ok(created);
        }
        for attempt in 0..PLACEMENT_ATTEMPTS {
            let (fleet, allocation) = self.plan_batch(tenant, request, now).await?;
            match self.insert_batch(tenant, request, idempotency_key, &hash, &fleet, &allocation, now).await {
                Ok(Ok((batch, instances))) => {
                    self.signals.hand_over(instances, request);
                    return Ok(Created { batch, replayed: false });
                }
                Ok(Err(LostRace)) => {
                    tracing::debug!(attempt, "lost a race for capacity; planning again");
                }
                Err(Error::Conflict { constraint, .. }) if constraint.contains("idempotency") => {
                    if let Some(created) = self.replay(tenant, idempotency_key, &hash).await? {
                        return Ok(created);
                    }
                    return Err(Error::Conflict { what: "batch", constraint });
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contention)
    }

    /// The batch an earlier request with this idempotency key made, if there is a key and one was
    /// made; refused when that request differed.
    async fn replay(&self, tenant: &TenantId, key: Option<&str>, hash: &str) -> Result<Option<Created>> {
        let Some(key) = key else { return Ok(None) };
        let row = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE tenant_id = $1 AND idempotency_key = $2"
        ))
        .bind(&tenant.0)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<String, _>("request_hash")? != hash {
            return Err(Error::IdempotencyMismatch(key.to_string()));
        }
        let id = BatchId(row.try_get("id")?);
        let batch =
            batch_from_row(&row, self.instance_counts(&[&id]).await?.remove(&id).unwrap_or_default())?;
        Ok(Some(Created { batch, replayed: true }))
    }

    /// Plans against the current snapshot: first the batch's reservation, then the open pool.
    async fn plan_batch(
        &self,
        tenant: &TenantId,
        request: &BatchRequest,
        now: DateTime<Utc>,
    ) -> Result<(Fleet, Allocation)> {
        let quota_left = self.get_tenant(tenant).await?.instances_left(&request.spec);
        let (fleet, ledger) = self.snapshot().await?;
        // Room left in the batch's reservation, whatever the quota says.
        let mut reservation_room = 0;
        let from_reservation = match &request.reservation_id {
            None => Plan::default(),
            Some(id) => {
                let reservation = self.get_reservation(tenant, id).await?;
                check_reservation_serves(&reservation, request, now)?;
                let slots: Vec<Slot> = reservation
                    .slots
                    .iter()
                    .filter(|s| s.used < s.count)
                    .map(|s| Slot { idc: s.idc.clone(), carrier: s.carrier, slots: s.count - s.used })
                    .collect();
                reservation_room = slots.iter().map(|s| s.slots).sum();
                let mut partial = request.placement_request(request.count, quota_left);
                partial.all_or_nothing = false;
                partial.max_per_idc = None;
                match plan_slots(slots, &partial) {
                    Ok(plan) => plan,
                    Err(PlacementError::InsufficientCapacity { .. }) => Plan::default(),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let drawn = from_reservation.placed();
        let remaining = request.count - drawn;
        let from_pool = if remaining == 0 {
            Plan::default()
        } else {
            let pool_request =
                request.placement_request(remaining, quota_left.map(|q| q.saturating_sub(drawn)));
            match eci_core::plan(&fleet, &ledger, &pool_request) {
                Ok(plan) => plan,
                Err(_) if drawn > 0 && !request.placement.all_or_nothing => Plan::default(),
                Err(e) if request.reservation_id.is_none() => return Err(e.into()),
                Err(PlacementError::NoMatchingIdc) if reservation_room == 0 => {
                    return Err(PlacementError::NoMatchingIdc.into());
                }
                Err(_) => {
                    // Name the bound that stops the whole batch, reservation and pool together, by
                    // the planner's rule: the quota when it is tighter than the room, else the room.
                    let room = reservation_room.saturating_add(pool_room(&fleet, &ledger, &pool_request));
                    let quota = quota_left.unwrap_or(u64::MAX);
                    let requested = request.count;
                    return Err(if quota < requested.min(room) {
                        PlacementError::QuotaExceeded { requested, placeable: quota }
                    } else {
                        PlacementError::InsufficientCapacity { requested, placeable: room.min(quota) }
                    }
                    .into());
                }
            }
        };
        Ok((fleet, Allocation { from_reservation, from_pool }))
    }

    #[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the list.
    async fn insert_batch(
        &self,
        tenant: &TenantId,
        request: &BatchRequest,
        idempotency_key: Option<&str>,
        hash: &str,
        fleet: &Fleet,
        allocation: &Allocation,
        now: DateTime<Utc>,
    ) -> Result<Result<(Batch, Vec<Instance>), LostRace>> {
        let placed = allocation.placed();
        let spec = request.spec;
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        if let Err(lost) =
            ledger::charge_tenant(&mut tx, tenant, int(placed), int(spec.cpu.0 * placed)).await?
        {
            return Ok(Err(lost));
        }
        let drawing = request.reservation_id.as_ref().filter(|_| allocation.from_reservation.placed() > 0);
        if let Some(reservation) = drawing {
            if !ledger::lock_active_reservation(&mut tx, reservation, now_ms).await? {
                return Ok(Err(LostRace));
            }
            if let Err(lost) = draw_slots(&mut tx, reservation, &allocation.from_reservation).await? {
                return Ok(Err(lost));
            }
        }
        // Every IDC row is touched once, in id order, as everywhere else: locking them in another
        // order (the reservation's IDCs, then the pool's) deadlocks against concurrent batches.
        let mut lines: BTreeMap<&IdcId, (u64, u64)> = BTreeMap::new();
        for p in &allocation.from_reservation.placements {
            lines.entry(&p.idc).or_default().0 += p.count;
        }
        for p in &allocation.from_pool.placements {
            lines.entry(&p.idc).or_default().1 += p.count;
        }
        for (idc, (drawn, fresh)) in lines {
            if drawn > 0
                && ledger::shift(&mut tx, idc, &(spec * drawn), "reserved", "allocated").await?.is_err()
            {
                return Ok(Err(LostRace));
            }
            if fresh > 0 && ledger::take_free(&mut tx, idc, &(spec * fresh), "allocated").await?.is_err() {
                return Ok(Err(LostRace));
            }
        }

        let id = BatchId(new_id(BatchId::PREFIX));
        let placement = placed_areas(fleet, &[&allocation.from_reservation, &allocation.from_pool]);
        let expires_at =
            request.ttl_seconds.map(|s| now + Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)));
        sqlx::query(
            "INSERT INTO batches (id, tenant_id, state, count, cpu, memory, gpu, runtime, image, request, placement, \
                 labels, reservation_id, idempotency_key, request_hash, created_at, expires_at) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&id.0)
        .bind(&tenant.0)
        .bind(int(placed))
        .bind(int(spec.cpu.0))
        .bind(int(spec.memory.0))
        .bind(i64::from(spec.gpu))
        .bind(request.runtime.as_str())
        .bind(&request.workload.image)
        .bind(to_json(request))
        .bind(to_json(&placement))
        .bind(to_json(&request.labels))
        .bind(request.reservation_id.as_ref().map(|r| r.0.clone()))
        .bind(idempotency_key)
        .bind(hash)
        .bind(now_ms)
        .bind(expires_at.map(millis))
        .execute(&mut *tx)
        .await?;
        for (key, value) in &request.labels {
            sqlx::query("INSERT INTO batch_labels (batch_id, key, value) VALUES ($1, $2, $3)")
                .bind(&id.0)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        let instances = new_instances(&id, tenant, request, fleet, allocation, now)?;
        insert_instances(&mut tx, self.backend, &instances).await?;
        tx.commit().await?;

        let counts = BTreeMap::from([(InstanceState::Pending, placed)]);
        let batch = Batch {
            id,
            tenant_id: tenant.clone(),
            state: BatchState::Active,
            request: request.clone(),
            count: placed,
            placement,
            counts,
            created_at: time(now_ms)?,
            expires_at: expires_at.map(|t| time(millis(t))).transpose()?,
            ended_at: None,
        };
        Ok(Ok((batch, instances)))
    }

    pub async fn get_batch(&self, tenant: &TenantId, id: &BatchId) -> Result<Batch> {
        let row =
            sqlx::query(&format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1 AND tenant_id = $2"))
                .bind(&id.0)
                .bind(&tenant.0)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| Error::NotFound { what: "batch", id: id.0.clone() })?;
        batch_from_row(&row, self.instance_counts(&[id]).await?.remove(id).unwrap_or_default())
    }

    /// A page of the tenant's batches, oldest first, after `cursor` (a batch id).
    pub async fn list_batches(
        &self,
        tenant: &TenantId,
        filter: &BatchFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Batch>> {
        let mut sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE tenant_id = $1 AND id > $2");
        let mut n = 2;
        if filter.state.is_some() {
            n += 1;
            sql.push_str(&format!(" AND state = ${n}"));
        }
        if filter.label.is_some() {
            sql.push_str(&format!(
                " AND id IN (SELECT batch_id FROM batch_labels WHERE key = ${} AND value = ${})",
                n + 1,
                n + 2
            ));
            n += 2;
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut query = sqlx::query(&sql).bind(&tenant.0).bind(cursor.unwrap_or(""));
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some((key, value)) = &filter.label {
            query = query.bind(key).bind(value);
        }
        let rows = query.bind(i64::from(limit) + 1).fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let rows = &rows[..rows.len().min(limit as usize)];
        let ids: Vec<BatchId> =
            rows.iter().map(|r| r.try_get("id").map(BatchId)).collect::<Result<_, _>>()?;
        let mut counts = self.instance_counts(&ids.iter().collect::<Vec<_>>()).await?;
        let items = rows
            .iter()
            .zip(&ids)
            .map(|(row, id)| batch_from_row(row, counts.remove(id).unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if more { ids.last().map(|id| id.0.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// How many instances of each batch are in each state.
    async fn instance_counts(
        &self,
        ids: &[&BatchId],
    ) -> Result<BTreeMap<BatchId, BTreeMap<InstanceState, u64>>> {
        let mut out: BTreeMap<BatchId, BTreeMap<InstanceState, u64>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT batch_id, state, COUNT(*) AS n FROM instances WHERE batch_id IN ({}) GROUP BY batch_id, state",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(&id.0);
        }
        for row in query.fetch_all(&self.pool).await? {
            let state: InstanceState = word("instance state", &row.try_get::<String, _>("state")?)?;
            let n = uint("count", row.try_get("n")?)?;
            out.entry(BatchId(row.try_get("batch_id")?)).or_default().insert(state, n);
        }
        Ok(out)
    }

    /// Ends a batch and releases every live instance in it (see [`release_instances`]). Releasing a
    /// batch that already ended returns it unchanged.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, batch.id = %id, to = %to))]
    pub async fn release_batch(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        to: BatchState,
        now: DateTime<Utc>,
    ) -> Result<Batch> {
        BatchState::Active.transition(to)?;
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE batches SET state = $1, ended_at = $2 WHERE id = $3 AND tenant_id = $4 AND state = 'active'",
        )
        .bind(to.as_str())
        .bind(now_ms)
        .bind(&id.0)
        .bind(&tenant.0)
        .execute(&mut *tx)
        .await?;
        let mut stopping = BTreeSet::new();
        if done.rows_affected() == 1 {
            stopping = release_instances(&mut tx, "batch_id = $3", &id.0, now_ms).await?;
        }
        tx.commit().await?;
        self.signals.raise(&stopping);
        self.get_batch(tenant, id).await
    }

    /// Expires every active batch whose TTL has run out; returns the ids it expired.
    pub async fn expire_batches(&self, now: DateTime<Utc>) -> Result<Vec<BatchId>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id FROM batches WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at <= $1 \
             ORDER BY expires_at",
        )
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in rows {
            let id = BatchId(row.try_get("id")?);
            let tenant = TenantId(row.try_get("tenant_id")?);
            let batch = self.release_batch(&tenant, &id, BatchState::Expired, now).await?;
            if batch.state == BatchState::Expired {
                tracing::info!(batch.id = %id, tenant.id = %tenant, "batch expired");
                expired.push(id);
            }
        }
        Ok(expired)
    }
}

/// How many instances of the request's kind the open pool has room for, quota aside.
fn pool_room(fleet: &Fleet, ledger: &eci_core::Ledger, request: &eci_core::PlacementRequest) -> u64 {
    let unbounded = eci_core::PlacementRequest {
        count: u64::MAX,
        all_or_nothing: true,
        quota_left: None,
        ..request.clone()
    };
    match eci_core::plan(fleet, ledger, &unbounded) {
        Err(PlacementError::InsufficientCapacity { placeable, .. }) => placeable,
        Err(_) => 0,
        Ok(plan) => plan.placed(),
    }
}

/// A reservation serves batches of its owner with the same size and runtime while it is active.
fn check_reservation_serves(
    reservation: &Reservation,
    request: &BatchRequest,
    now: DateTime<Utc>,
) -> Result<()> {
    if reservation.state != ReservationState::Active || reservation.request.ends_at <= now {
        return Err(Error::ReservationMismatch(format!(
            "reservation `{}` is no longer active",
            reservation.id
        )));
    }
    if reservation.request.spec != request.spec || reservation.request.runtime != request.runtime {
        return Err(Error::ReservationMismatch(format!(
            "reservation `{}` holds {} vCPU / {} / {} GPU `{}` instances; the batch asks for {} / {} / {} `{}`",
            reservation.id,
            reservation.request.spec.cpu,
            reservation.request.spec.memory,
            reservation.request.spec.gpu,
            reservation.request.runtime,
            request.spec.cpu,
            request.spec.memory,
            request.spec.gpu,
            request.runtime,
        )));
    }
    Ok(())
}

/// Marks the planned part of a reservation as used, slot by slot in IDC order. The capacity itself
/// moves from reserved to allocated with the rest of the batch's ledger changes.
async fn draw_slots(
    tx: &mut Tx<'_>,
    reservation: &eci_core::ReservationId,
    plan: &Plan,
) -> Result<Result<(), LostRace>> {
    let mut placements: Vec<_> = plan.placements.iter().collect();
    placements.sort_by(|a, b| a.idc.cmp(&b.idc));
    for p in placements {
        let done = sqlx::query(
            "UPDATE reservation_slots SET used = used + $1 WHERE reservation_id = $2 AND idc_id = $3 AND used + $1 <= count",
        )
        .bind(int(p.count))
        .bind(&reservation.0)
        .bind(&p.idc.0)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Err(LostRace));
        }
    }
    Ok(Ok(()))
}

/// Writes the batch's instances in multi-row INSERTs.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the list.
/// The batch's instances as placed, all `pending`.
fn new_instances(
    batch: &BatchId,
    tenant: &TenantId,
    request: &BatchRequest,
    fleet: &Fleet,
    allocation: &Allocation,
    now: DateTime<Utc>,
) -> Result<Vec<Instance>> {
    // As stored: to the millisecond.
    let now = time(millis(now))?;
    let areas: BTreeMap<&IdcId, &eci_core::Area> = fleet.idcs.iter().map(|i| (&i.id, &i.area)).collect();
    let mut instances = Vec::with_capacity(usize::try_from(allocation.placed()).unwrap_or_default());
    for (plan, reservation) in
        [(&allocation.from_reservation, request.reservation_id.as_ref()), (&allocation.from_pool, None)]
    {
        for p in &plan.placements {
            let area =
                areas.get(&p.idc).ok_or_else(|| Error::NotFound { what: "IDC", id: p.idc.0.clone() })?;
            for _ in 0..p.count {
                instances.push(Instance {
                    id: InstanceId(new_id(InstanceId::PREFIX)),
                    batch_id: batch.clone(),
                    tenant_id: tenant.clone(),
                    state: InstanceState::Pending,
                    spec: request.spec,
                    runtime: request.runtime,
                    idc: p.idc.clone(),
                    area: (*area).clone(),
                    carrier: p.carrier,
                    reservation_id: reservation.cloned(),
                    ip: None,
                    ssh: None,
                    failure_reason: None,
                    created_at: now,
                    updated_at: now,
                    started_at: None,
                    ended_at: None,
                });
            }
        }
    }
    Ok(instances)
}

async fn insert_instances(tx: &mut Tx<'_>, backend: Backend, instances: &[Instance]) -> Result<()> {
    const COLUMNS: usize = 16;
    for chunk in instances.chunks(INSERT_CHUNK) {
        let values = (0..chunk.len())
            .map(|r| format!("({})", bulk_placeholders(backend, r * COLUMNS + 1, COLUMNS)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO instances (id, batch_id, tenant_id, state, cpu, memory, gpu, runtime, idc_id, region, \
                 province, city, carrier, reservation_id, created_at, updated_at) VALUES {values}"
        );
        let mut query = sqlx::query(&sql);
        for instance in chunk {
            let created_at = millis(instance.created_at);
            query = query
                .bind(&instance.id.0)
                .bind(&instance.batch_id.0)
                .bind(&instance.tenant_id.0)
                .bind(instance.state.as_str())
                .bind(int(instance.spec.cpu.0))
                .bind(int(instance.spec.memory.0))
                .bind(i64::from(instance.spec.gpu))
                .bind(instance.runtime.as_str())
                .bind(&instance.idc.0)
                .bind(&instance.area.region)
                .bind(&instance.area.province)
                .bind(&instance.area.city)
                .bind(instance.carrier.as_str())
                .bind(instance.reservation_id.as_ref().map(|r| r.0.clone()))
                .bind(created_at)
                .bind(created_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Releases the live instances matching `condition` (written against `$3`, bound to `value`). Those
/// with nothing in the cluster yet (`pending`) end at once and give their capacity back; those with a
/// Pod or VMI turn `stopping` and keep their capacity until the instance manager has seen the object
/// gone. Returns the IDCs with instances to stop.
pub(crate) async fn release_instances(
    tx: &mut Tx<'_>,
    condition: &str,
    value: &str,
    now_ms: i64,
) -> Result<BTreeSet<IdcId>> {
    let stopping = sqlx::query(&format!(
        "UPDATE instances SET state = $1, updated_at = $2 \
         WHERE {condition} AND state IN ('creating', 'running', 'unknown') RETURNING idc_id"
    ))
    .bind(InstanceState::Stopping.as_str())
    .bind(now_ms)
    .bind(value)
    .fetch_all(&mut **tx)
    .await?;
    end_instances(tx, &format!("{condition} AND state = 'pending'"), value, Ending::Terminated, now_ms)
        .await?;
    stopping.iter().map(|row| Ok(IdcId(row.try_get("idc_id")?))).collect()
}

/// How live instances end: released (`terminated`) or lost (`failed`, with the reason).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending<'a> {
    Terminated,
    /// Failed for this reason, having stopped at this moment (UTC ms), which may be before now.
    FailedAt(&'a str, i64),
}

/// Ends the live instances matching `condition` (written against `$3`, bound to `value`) and gives
/// their capacity back. Writes first, so it is safe as the first statement of a transaction.
pub(crate) async fn end_instances(
    tx: &mut Tx<'_>,
    condition: &str,
    value: &str,
    ending: Ending<'_>,
    now_ms: i64,
) -> Result<Vec<InstanceId>> {
    let (state, reason, ended_ms) = match ending {
        Ending::Terminated => (InstanceState::Terminated, None, now_ms),
        Ending::FailedAt(reason, ended_ms) => (InstanceState::Failed, Some(reason), ended_ms),
    };
    let sql = format!(
        "UPDATE instances SET state = $1, ended_at = $5, updated_at = $2, \
             failure_reason = COALESCE($4, failure_reason) \
         WHERE {condition} AND state NOT IN ('terminated', 'failed') \
         RETURNING id, tenant_id, idc_id, cpu, memory, gpu, reservation_id"
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
            tenant: TenantId(row.try_get("tenant_id")?),
            idc: IdcId(row.try_get("idc_id")?),
            spec: eci_core::Resources::new(
                eci_core::MilliCpu(uint("cpu", row.try_get("cpu")?)?),
                eci_core::MiB(uint("memory", row.try_get("memory")?)?),
                u32::try_from(uint("gpu", row.try_get("gpu")?)?).unwrap_or(u32::MAX),
            ),
            reservation: row.try_get::<Option<String>, _>("reservation_id")?.map(eci_core::ReservationId),
        });
    }
    ledger::release_ended(tx, &ended, now_ms).await?;
    Ok(ids)
}
