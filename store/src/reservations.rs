//! Reservations: capacity held for one tenant ahead of its batches.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eci_core::{
    Area, Column, IdcId, Reservation, ReservationId, ReservationRequest, ReservationSlot, ReservationState,
    TenantId,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ledger;
use crate::paging::{Keyset, Page};
use crate::sql::{int, json, millis, new_id, opt_time, time, to_json, uint, word};
use crate::{Error, Result, Store};

const RESERVATION_COLUMNS: &str = "id, tenant_id, state, request, created_at, ended_at";

impl Store {
    /// Places a reservation and holds its capacity, in one transaction.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, count = request.count))]
    pub async fn create_reservation(
        &self,
        tenant: &TenantId,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> Result<Reservation> {
        let id = self
            .replanning(move || async move {
                let plan = eci_core::allocation::place_reservation(&self.snapshot().await?, request)?;
                let mut placements = plan.placements;
                placements.sort_by(|a, b| a.idc.cmp(&b.idc));
                let mut tx = self.pool.begin().await?;
                for p in &placements {
                    if let Err(lost) =
                        ledger::take_free(&mut tx, &p.idc, &(request.spec * p.count), Column::Reserved).await?
                    {
                        return Ok(Err(lost));
                    }
                }
                let id = ReservationId(new_id(ReservationId::PREFIX));
                sqlx::query(
                    "INSERT INTO reservations (id, tenant_id, state, count, cpu, memory, gpu, runtime, request, \
                         created_at, ends_at, updated_at) VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9, $10, $9)",
                )
                .bind(&id.0)
                .bind(&tenant.0)
                .bind(int(request.count))
                .bind(int(request.spec.cpu.0))
                .bind(int(request.spec.memory.0))
                .bind(i64::from(request.spec.gpu))
                .bind(request.runtime.as_str())
                .bind(to_json(request))
                .bind(millis(now))
                .bind(millis(request.ends_at))
                .execute(&mut *tx)
                .await?;
                for p in &placements {
                    sqlx::query(
                        "INSERT INTO reservation_slots (reservation_id, idc_id, carrier, count) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&id.0)
                    .bind(&p.idc.0)
                    .bind(p.carrier.as_str())
                    .bind(int(p.count))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Ok(id))
            })
            .await?;
        self.get_reservation(tenant, &id).await
    }

    /// One of the tenant's reservations, with its slots.
    pub async fn get_reservation(&self, tenant: &TenantId, id: &ReservationId) -> Result<Reservation> {
        let row = sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(&id.0)
        .bind(&tenant.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound { what: "reservation", id: id.0.clone() })?;
        let mut slots = self.reservation_slots(&[id]).await?;
        reservation_from_row(&row, slots.remove(id).unwrap_or_default())
    }

    /// A page of the tenant's reservations, oldest first, after `cursor`.
    pub async fn list_reservations(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Reservation>> {
        let keyset = Keyset::new(cursor, limit);
        let rows = sqlx::query(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(&tenant.0)
        .bind(keyset.after)
        .bind(keyset.fetch())
        .fetch_all(&self.pool)
        .await?;
        let (rows, more) = keyset.split(rows);
        let ids: Vec<ReservationId> =
            rows.iter().map(|r| r.try_get("id").map(ReservationId)).collect::<Result<_, _>>()?;
        let mut slots = self.reservation_slots(&ids.iter().collect::<Vec<_>>()).await?;
        let items = rows
            .iter()
            .zip(&ids)
            .map(|(row, id)| reservation_from_row(row, slots.remove(id).unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |r| &r.id.0))
    }

    async fn reservation_slots(
        &self,
        ids: &[&ReservationId],
    ) -> Result<BTreeMap<ReservationId, Vec<ReservationSlot>>> {
        let mut out: BTreeMap<ReservationId, Vec<ReservationSlot>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT s.reservation_id, s.idc_id, s.carrier, s.count, s.used, i.region, i.province, i.city \
             FROM reservation_slots s JOIN idcs i ON i.id = s.idc_id \
             WHERE s.reservation_id IN ({}) ORDER BY s.reservation_id, s.idc_id",
            crate::sql::placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(&id.0);
        }
        for row in query.fetch_all(&self.pool).await? {
            out.entry(ReservationId(row.try_get("reservation_id")?)).or_default().push(ReservationSlot {
                idc: IdcId(row.try_get("idc_id")?),
                area: Area {
                    region: row.try_get("region")?,
                    province: row.try_get("province")?,
                    city: row.try_get("city")?,
                },
                carrier: word("carrier", &row.try_get::<String, _>("carrier")?)?,
                count: uint("slot count", row.try_get("count")?)?,
                used: uint("slot used", row.try_get("used")?)?,
            });
        }
        Ok(out)
    }

    /// Ends a reservation; what its owner is not using goes back to the pool at once, and what is in
    /// use goes back when those instances end.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, reservation.id = %id, to = %to))]
    pub async fn release_reservation(
        &self,
        tenant: &TenantId,
        id: &ReservationId,
        to: ReservationState,
        now: DateTime<Utc>,
    ) -> Result<Reservation> {
        ReservationState::Active.transition(to)?;
        let reservation = self.get_reservation(tenant, id).await?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE reservations SET state = $1, ended_at = $2, updated_at = $2 \
             WHERE id = $3 AND tenant_id = $4 AND state = 'active'",
        )
        .bind(to.as_str())
        .bind(millis(now))
        .bind(&id.0)
        .bind(&tenant.0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            // The row lock taken above keeps `used` steady until commit.
            let rows = sqlx::query(
                "SELECT idc_id, count, used FROM reservation_slots WHERE reservation_id = $1 ORDER BY idc_id",
            )
            .bind(&id.0)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let unused = uint("slot", row.try_get::<i64, _>("count")? - row.try_get::<i64, _>("used")?)?;
                if unused > 0 {
                    let idc = IdcId(row.try_get("idc_id")?);
                    ledger::give_back(&mut tx, &idc, &(reservation.request.spec * unused), Column::Reserved)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        self.get_reservation(tenant, id).await
    }

    /// Expires every active reservation whose end time has passed; returns the ids it expired.
    pub async fn expire_reservations(&self, now: DateTime<Utc>) -> Result<Vec<ReservationId>> {
        let rows = sqlx::query("SELECT id, tenant_id FROM reservations WHERE state = 'active' AND ends_at <= $1 ORDER BY ends_at")
            .bind(millis(now))
            .fetch_all(&self.pool)
            .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in rows {
            let id = ReservationId(row.try_get("id")?);
            let tenant = TenantId(row.try_get("tenant_id")?);
            if self.release_reservation(&tenant, &id, ReservationState::Expired, now).await?.state
                == ReservationState::Expired
            {
                tracing::info!(reservation.id = %id, tenant.id = %tenant, "reservation expired");
                expired.push(id);
            }
        }
        Ok(expired)
    }
}

fn reservation_from_row(row: &AnyRow, slots: Vec<ReservationSlot>) -> Result<Reservation> {
    Ok(Reservation {
        id: ReservationId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        state: word("reservation state", &row.try_get::<String, _>("state")?)?,
        request: json("reservation request", &row.try_get::<String, _>("request")?)?,
        slots,
        created_at: time(row.try_get("created_at")?)?,
        ended_at: opt_time(row.try_get("ended_at")?)?,
    })
}
