//! Batches: creation with placement and capacity allocation in one transaction, reads, release.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use eci_core::{
    Allocation, Batch, BatchId, BatchRequest, BatchState, Column, Fleet, IdcId, Instance, InstanceId,
    InstanceState, Snapshot, TenantId,
};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::instances::{Released, Scope, release_instances};
use crate::ledger::{self, LostRace, Tx};
use crate::paging::{Keyset, Page};
use crate::risk::{Deletion, Target};
use crate::sql::{
    bulk_placeholders, int, json, millis, new_id, opt_time, placeholders, time, to_json, uint, word,
};
use crate::{Backend, Error, Result, Store};
use eci_core::risk::{ActorKind, TargetKind};

/// Rows per multi-row INSERT; well under both backends' parameter limits.
const INSERT_CHUNK: usize = 400;

/// What listing batches may filter on.
#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    /// Only batches in this state.
    pub state: Option<BatchState>,
    /// Only batches with this label (`key`, `value`).
    pub label: Option<(String, String)>,
}

/// The outcome of creating a batch: new, or the one an earlier request with the same key made.
#[derive(Debug, Clone)]
pub struct Created {
    /// The batch, as stored.
    pub batch: Batch,
    /// True when an earlier request with the same idempotency key made it.
    pub replayed: bool,
}

/// What a new batch is stored under besides its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<'a> {
    /// The key that makes retries of the request safe, if any.
    pub idempotency_key: Option<&'a str>,
    /// The fingerprint of the request the key is compared on.
    pub hash: &'a str,
    /// The group that grows by the batch, and the revision the growth was decided at.
    pub group: Option<(&'a eci_core::GroupId, u64)>,
}

/// What an idempotency key is stored with: the version of the request's canonical form and the
/// SHA-256 of it, so that a key is compared on what was asked, never on how a struct serialises.
pub(crate) fn request_hash(request: &BatchRequest) -> String {
    let digest = hex::encode(Sha256::digest(request.canonical_form().as_bytes()));
    format!("{}:{digest}", BatchRequest::CANONICAL_VERSION)
}

const BATCH_COLUMNS: &str =
    "id, tenant_id, state, count, request, placement, created_at, expires_at, ended_at, request_hash, labels";

/// A batch's instances counted by state, and its failed ones by reason.
#[derive(Debug, Default)]
struct Counts {
    by_state: BTreeMap<InstanceState, u64>,
    failures: BTreeMap<String, u64>,
}

fn batch_from_row(row: &AnyRow, counts: Counts) -> Result<Batch> {
    let mut request: BatchRequest = json("batch request", &row.try_get::<String, _>("request")?)?;
    // The labels as they are now: its tenant may have changed them since the request.
    request.labels = json("batch labels", &row.try_get::<String, _>("labels")?)?;
    Ok(Batch {
        id: BatchId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        state: word("batch state", &row.try_get::<String, _>("state")?)?,
        request,
        count: uint("batch count", row.try_get("count")?)?,
        placement: json("batch placement", &row.try_get::<String, _>("placement")?)?,
        counts: counts.by_state,
        failures: counts.failures,
        created_at: time(row.try_get("created_at")?)?,
        expires_at: opt_time(row.try_get("expires_at")?)?,
        ended_at: opt_time(row.try_get("ended_at")?)?,
    })
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

        let hash = hash.as_str();
        let created = self
            .replanning(move || async move {
                let (snapshot, allocation) =
                    self.allocate_batch(tenant, request, &BTreeSet::new(), now).await?;
                let into = Stored { idempotency_key, hash, group: None };
                self.insert_batch(tenant, request, into, &snapshot.fleet, &allocation, now).await
            })
            .await;
        match created {
            Ok((batch, instances)) => {
                self.report_new_instances(instances, request);
                Ok(Created { batch, replayed: false })
            }
            Err(Error::Conflict { constraint, .. }) if constraint.contains("idempotency") => {
                match self.replay(tenant, idempotency_key, hash).await? {
                    Some(created) => Ok(created),
                    None => Err(Error::Conflict { what: "batch", constraint }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Rewrites fingerprints stored before they carried a version (the SHA-256 of the request's
    /// JSON) as fingerprints of the current canonical form, computed from the request the batch
    /// stored; keys already used keep matching the same requests. Returns how many it rewrote.
    pub(crate) async fn upgrade_request_hashes(&self) -> Result<u64> {
        let prefix = format!("{}:%", BatchRequest::CANONICAL_VERSION);
        let rows = sqlx::query(
            "SELECT id, request FROM batches WHERE idempotency_key IS NOT NULL AND request_hash NOT LIKE $1",
        )
        .bind(&prefix)
        .fetch_all(&self.pool)
        .await?;
        let mut upgraded = 0;
        for row in rows {
            let request: BatchRequest = json("batch request", &row.try_get::<String, _>("request")?)?;
            upgraded += sqlx::query(
                "UPDATE batches SET request_hash = $1 WHERE id = $2 AND request_hash NOT LIKE $3",
            )
            .bind(request_hash(&request))
            .bind(row.try_get::<String, _>("id")?)
            .bind(&prefix)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if upgraded > 0 {
            tracing::info!(upgraded, "idempotency fingerprints upgraded to the versioned canonical form");
        }
        Ok(upgraded)
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

    /// Reads one snapshot (fleet and ledger, the tenant, the batch's reservation) and lets core
    /// decide the allocation over it.
    /// IDCs in `avoid` are left out of the snapshot, as if the fleet did not have them.
    pub(crate) async fn allocate_batch(
        &self,
        tenant: &TenantId,
        request: &BatchRequest,
        avoid: &BTreeSet<IdcId>,
        now: DateTime<Utc>,
    ) -> Result<(Snapshot, Allocation)> {
        let owner = self.get_tenant(tenant).await?;
        let mut snapshot = self.snapshot().await?;
        snapshot.fleet.idcs.retain(|idc| !avoid.contains(&idc.id));
        let reservation = match &request.reservation_id {
            Some(id) => Some(self.get_reservation(tenant, id).await?),
            None => None,
        };
        let allocation = eci_core::allocate(&snapshot, &owner, reservation.as_ref(), request, now)?;
        Ok((snapshot, allocation))
    }

    /// Writes an allocated batch. A group's batch first moves the group's revision on from the one
    /// the growth was decided at, so that a group written to since grows by nothing.
    pub(crate) async fn insert_batch(
        &self,
        tenant: &TenantId,
        request: &BatchRequest,
        into: Stored<'_>,
        fleet: &Fleet,
        allocation: &Allocation,
        now: DateTime<Utc>,
    ) -> Result<Result<(Batch, Vec<Instance>), LostRace>> {
        let placed = allocation.placed();
        let spec = request.spec;
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        if let Some((group, revision)) = into.group {
            crate::groups::advance_revision(&mut tx, group, revision, now_ms).await?;
        }
        if let Err(lost) =
            ledger::charge_tenant(&mut tx, tenant, int(placed), int(spec.cpu.0 * placed)).await?
        {
            return Ok(Err(lost));
        }
        if let Some((reservation, draws)) = allocation.reservation_draws() {
            if !ledger::lock_active_reservation(&mut tx, reservation, now_ms).await? {
                return Ok(Err(LostRace));
            }
            if let Err(lost) = draw_slots(&mut tx, reservation, &draws).await? {
                return Ok(Err(lost));
            }
        }
        // Every IDC row is touched once, in id order, as everywhere else: locking them in another
        // order (the reservation's IDCs, then the pool's) deadlocks against concurrent batches.
        for (idc, share) in allocation.shares() {
            if share.drawn > 0
                && ledger::shift(&mut tx, idc, &(spec * share.drawn), Column::Reserved, Column::Allocated)
                    .await?
                    .is_err()
            {
                return Ok(Err(LostRace));
            }
            if share.fresh > 0
                && ledger::take_free(&mut tx, idc, &(spec * share.fresh), Column::Allocated).await?.is_err()
            {
                return Ok(Err(LostRace));
            }
        }

        let id = BatchId(new_id(BatchId::PREFIX));
        let placement = allocation.placed_areas(fleet);
        let expires_at =
            request.ttl_seconds.map(|s| now + Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)));
        sqlx::query(
            "INSERT INTO batches (id, tenant_id, state, count, cpu, memory, gpu, runtime, image, request, placement, \
                 labels, reservation_id, idempotency_key, request_hash, created_at, expires_at, create_timeout_ms, \
                 group_id, delete_protected) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
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
        .bind(into.idempotency_key)
        .bind(into.hash)
        .bind(now_ms)
        .bind(expires_at.map(millis))
        .bind(i64::from(request.create_timeout_seconds()) * 1000)
        .bind(into.group.map(|(g, _)| g.0.clone()))
        .bind(i64::from(eci_core::risk::is_protected(&request.labels)))
        .execute(&mut *tx)
        .await?;
        insert_labels(&mut tx, &id, &request.labels).await?;
        // As stored: to the millisecond.
        let created_at = time(now_ms)?;
        let instances = allocation
            .instances(&id, tenant, request, fleet, created_at, || InstanceId(new_id(InstanceId::PREFIX)))
            .map_err(|idc| Error::NotFound { what: "IDC", id: idc.0 })?;
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
            failures: BTreeMap::new(),
            created_at: time(now_ms)?,
            expires_at: expires_at.map(|t| time(millis(t))).transpose()?,
            ended_at: None,
        };
        Ok(Ok((batch, instances)))
    }

    /// One of the tenant's batches, with its instances counted by state.
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
        let keyset = Keyset::new(cursor, limit);
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
        let mut query = sqlx::query(&sql).bind(&tenant.0).bind(keyset.after);
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some((key, value)) = &filter.label {
            query = query.bind(key).bind(value);
        }
        let (rows, more) = keyset.split(query.bind(keyset.fetch()).fetch_all(&self.pool).await?);
        let ids: Vec<BatchId> =
            rows.iter().map(|r| r.try_get("id").map(BatchId)).collect::<Result<_, _>>()?;
        let mut counts = self.instance_counts(&ids.iter().collect::<Vec<_>>()).await?;
        let items = rows
            .iter()
            .zip(&ids)
            .map(|(row, id)| batch_from_row(row, counts.remove(id).unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |b| &b.id.0))
    }

    /// How many instances of each batch are in each state, and why those that failed did.
    async fn instance_counts(&self, ids: &[&BatchId]) -> Result<BTreeMap<BatchId, Counts>> {
        let mut out: BTreeMap<BatchId, Counts> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT batch_id, state, failure_reason, COUNT(*) AS n FROM instances WHERE batch_id IN ({}) \
             GROUP BY batch_id, state, failure_reason",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(&id.0);
        }
        for row in query.fetch_all(&self.pool).await? {
            let state: InstanceState = word("instance state", &row.try_get::<String, _>("state")?)?;
            let n = uint("count", row.try_get("n")?)?;
            let counts = out.entry(BatchId(row.try_get("batch_id")?)).or_default();
            *counts.by_state.entry(state).or_default() += n;
            if let (InstanceState::Failed, Some(reason)) =
                (state, row.try_get::<Option<String>, _>("failure_reason")?)
            {
                *counts.failures.entry(reason).or_default() += n;
            }
        }
        Ok(out)
    }

    /// Ends a batch and releases every live instance in it (see [`Store::release_instance`]). Releasing a
    /// batch that already ended returns it unchanged.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, batch.id = %id, to = %to))]
    pub async fn release_batch(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        to: BatchState,
        deletion: &Deletion,
        now: DateTime<Utc>,
    ) -> Result<Batch> {
        BatchState::Active.transition(to)?;
        self.get_batch(tenant, id).await?;
        let now_ms = millis(now);
        let target = Target { kind: TargetKind::Batch, id: &id.0, tenant };
        self.check_protection(deletion, target, Scope::Batch(id), now_ms).await?;
        let rules = self.rules_for(tenant).await?;
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
        let mut released = Released::default();
        if done.rows_affected() == 1 {
            released = release_instances(&mut tx, Scope::Batch(id), now_ms).await?;
        }
        self.commit_release(tx, deletion, target, &released, &rules, now_ms).await?;
        self.get_batch(tenant, id).await
    }

    /// Sets a batch's labels as its record keeps them (its Pods keep those they were made with);
    /// the protection label among them protects the batch and its instances from deletion.
    pub async fn set_batch_labels(
        &self,
        tenant: &TenantId,
        id: &BatchId,
        labels: &BTreeMap<String, String>,
    ) -> Result<Batch> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE batches SET labels = $1, delete_protected = $2 WHERE id = $3 AND tenant_id = $4",
        )
        .bind(to_json(labels))
        .bind(i64::from(eci_core::risk::is_protected(labels)))
        .bind(&id.0)
        .bind(&tenant.0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::NotFound { what: "batch", id: id.0.clone() });
        }
        sqlx::query("DELETE FROM batch_labels WHERE batch_id = $1").bind(&id.0).execute(&mut *tx).await?;
        insert_labels(&mut tx, id, labels).await?;
        tx.commit().await?;
        self.get_batch(tenant, id).await
    }

    /// Expires every active batch whose TTL has run out; returns the ids it expired. A batch that
    /// risk control holds (its protection, a full window) stays active and is tried again at the
    /// next pass: deferred, never dropped.
    pub async fn expire_batches(&self, now: DateTime<Utc>) -> Result<Vec<BatchId>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id FROM batches WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at <= $1 \
             ORDER BY expires_at",
        )
        .bind(millis(now))
        .fetch_all(&self.pool)
        .await?;
        let deletion = Deletion::by(ActorKind::Expiry);
        let mut expired = Vec::with_capacity(rows.len());
        for row in rows {
            let id = BatchId(row.try_get("id")?);
            let tenant = TenantId(row.try_get("tenant_id")?);
            match self.release_batch(&tenant, &id, BatchState::Expired, &deletion, now).await {
                Ok(batch) if batch.state == BatchState::Expired => {
                    tracing::info!(batch.id = %id, tenant.id = %tenant, "batch expired");
                    expired.push(id);
                }
                Ok(_) => {}
                Err(held @ (Error::DeleteProtected { .. } | Error::DeletionRateLimited(_))) => {
                    tracing::warn!(batch.id = %id, tenant.id = %tenant, reason = %held, "expiry held by risk control");
                }
                Err(other) => return Err(other),
            }
        }
        Ok(expired)
    }
}

/// Writes a batch's labels where listings filter on them.
async fn insert_labels(tx: &mut Tx<'_>, batch: &BatchId, labels: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in labels {
        sqlx::query("INSERT INTO batch_labels (batch_id, key, value) VALUES ($1, $2, $3)")
            .bind(&batch.0)
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Marks the planned part of a reservation as used, slot by slot in IDC order. The capacity itself
/// moves from reserved to allocated with the rest of the batch's ledger changes.
async fn draw_slots(
    tx: &mut Tx<'_>,
    reservation: &eci_core::ReservationId,
    draws: &[(&IdcId, u64)],
) -> Result<Result<(), LostRace>> {
    for (idc, count) in draws {
        let done = sqlx::query(
            "UPDATE reservation_slots SET used = used + $1 WHERE reservation_id = $2 AND idc_id = $3 AND used + $1 <= count",
        )
        .bind(int(*count))
        .bind(&reservation.0)
        .bind(&idc.0)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Err(LostRace));
        }
    }
    Ok(Ok(()))
}

/// Writes the batch's instances in multi-row INSERTs.
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
