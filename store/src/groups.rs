//! Autoscaled groups: their records, what their scalers decided (events, status, load history),
//! the metrics they scale on, and the writes that grow and shrink them, each conditional on the
//! revision the decision was made at.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use eci_core::{BatchId, GroupId, IdcId, InstanceId, MilliCpu, PlacementSpec, TenantId};
use eci_scaler::group::{EventKind, Group, GroupState, Policy, Status, Template};
use eci_scaler::load::LoadHistory;
use eci_scaler::tick::{Failure, Member};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::batches::Stored;
use crate::instances::{Released, Scope, release_instances};
use crate::ledger::Tx;
use crate::paging::{Keyset, Page};
use crate::risk::{Deletion, Target};
use crate::sql::{int, json, millis, new_id, opt_time, placeholders, time, to_json, uint, word};
use crate::{Error, Result, Store};
use eci_core::risk::{ActorKind, TargetKind};

/// A group as its tenant asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// The tenant's name for it.
    pub name: String,
    /// Its own labels.
    pub labels: BTreeMap<String, String>,
    /// What every instance is.
    pub template: Template,
    /// Where instances may go.
    pub placement: PlacementSpec,
    /// What sets the count.
    pub policy: Policy,
}

/// One recorded event of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    /// Time-ordered: the events' order.
    pub id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What it records.
    pub kind: EventKind,
    /// The group's live instances then.
    pub current: u32,
    /// What the policy asked for then.
    pub desired: u32,
    /// Why, for people.
    pub message: String,
    /// The facts: the window, the metric, the rule that applied, what was placed or released where.
    pub details: serde_json::Value,
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What it records.
    pub kind: EventKind,
    /// The group's live instances.
    pub current: u32,
    /// What the policy asks for.
    pub desired: u32,
    /// Why, for people.
    pub message: String,
    /// The facts, as a JSON object.
    pub details: serde_json::Value,
}

/// A group the scaler looks at: its record and the load policy's memory.
#[derive(Debug, Clone)]
pub struct Scaled {
    /// The group.
    pub group: Group,
    /// Recent load recommendations and scale events.
    pub history: LoadHistory,
}

/// What growing a group placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grown {
    /// The batch that holds the new instances, when anything was placed.
    pub batch: Option<BatchId>,
    /// Instances placed, by IDC.
    pub placed: BTreeMap<IdcId, u64>,
    /// Why fewer than asked were placed, when they were.
    pub short: Option<String>,
}

impl Grown {
    /// How many were placed.
    pub fn count(&self) -> u64 {
        self.placed.values().sum()
    }
}

const GROUP_COLUMNS: &str = "id, tenant_id, name, labels, state, template, placement, policy, generation, revision, status, created_at, deleted_at";

fn group_from_row(row: &AnyRow) -> Result<Group> {
    Ok(Group {
        id: GroupId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        name: row.try_get("name")?,
        labels: json("group labels", &row.try_get::<String, _>("labels")?)?,
        state: word("group state", &row.try_get::<String, _>("state")?)?,
        template: json("group template", &row.try_get::<String, _>("template")?)?,
        placement: json("group placement", &row.try_get::<String, _>("placement")?)?,
        policy: json("group policy", &row.try_get::<String, _>("policy")?)?,
        generation: uint("group generation", row.try_get("generation")?)?,
        revision: uint("group revision", row.try_get("revision")?)?,
        status: json("group status", &row.try_get::<String, _>("status")?)?,
        created_at: time(row.try_get("created_at")?)?,
        deleted_at: opt_time(row.try_get("deleted_at")?)?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<GroupEvent> {
    let count = |what, v: i64| uint(what, v).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(GroupEvent {
        id: row.try_get("id")?,
        at: time(row.try_get("at")?)?,
        kind: word("group event", &row.try_get::<String, _>("kind")?)?,
        current: count("event current", row.try_get("current")?)?,
        desired: count("event desired", row.try_get("desired")?)?,
        message: row.try_get("message")?,
        details: json("event details", &row.try_get::<String, _>("details")?)?,
    })
}

/// Moves a group's revision on from `revision`, or refuses: someone wrote to the group since.
/// A write, so it may open a transaction.
pub(crate) async fn advance_revision(
    tx: &mut Tx<'_>,
    group: &GroupId,
    revision: u64,
    now_ms: i64,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE groups SET revision = revision + 1, updated_at = $1 \
         WHERE id = $2 AND revision = $3 AND state = 'active'",
    )
    .bind(now_ms)
    .bind(&group.0)
    .bind(int(revision))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 1 { Ok(()) } else { Err(Error::StaleGeneration(group.0.clone())) }
}

async fn insert_events(tx: &mut Tx<'_>, group: &GroupId, events: &[NewEvent], now_ms: i64) -> Result<()> {
    for event in events {
        sqlx::query(
            "INSERT INTO group_events (id, group_id, at, kind, current, desired, message, details)              VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id("e-"))
        .bind(&group.0)
        .bind(now_ms)
        .bind(event.kind.as_str())
        .bind(i64::from(event.current))
        .bind(i64::from(event.desired))
        .bind(&event.message)
        .bind(event.details.to_string())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// What a cluster reported an instance to use, and when it measured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSample {
    /// The instance.
    pub instance: InstanceId,
    /// Its CPU use.
    pub used: MilliCpu,
    /// When the cluster measured it (the end of its measuring window).
    pub sampled_at: DateTime<Utc>,
}

impl Store {
    /// Keeps the latest CPU sample of each instance (an older sample never replaces a newer one).
    /// Returns how many were recorded.
    pub async fn record_cpu_samples(&self, samples: &[CpuSample]) -> Result<u64> {
        let mut recorded = 0;
        let mut tx = self.pool.begin().await?;
        for sample in samples {
            recorded += sqlx::query(
                "INSERT INTO instance_samples (instance_id, cpu, sampled_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (instance_id) DO UPDATE SET cpu = excluded.cpu, sampled_at = excluded.sampled_at \
                 WHERE instance_samples.sampled_at < excluded.sampled_at",
            )
            .bind(&sample.instance.0)
            .bind(int(sample.used.0))
            .bind(millis(sample.sampled_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Forgets CPU samples and custom metric values taken before `before`: long past counting (a
    /// sample is stale after two minutes), and of instances and groups mostly gone. Returns how
    /// many it forgot.
    pub async fn forget_samples_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let at = millis(before);
        let cpu = sqlx::query("DELETE FROM instance_samples WHERE sampled_at < $1")
            .bind(at)
            .execute(&self.pool)
            .await?;
        let custom = sqlx::query("DELETE FROM group_metric_samples WHERE sampled_at < $1")
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(cpu.rows_affected() + custom.rows_affected())
    }

    /// The latest CPU sample of each of `instances` that has one.
    pub async fn cpu_samples(&self, instances: &[InstanceId]) -> Result<Vec<CpuSample>> {
        let mut out = Vec::with_capacity(instances.len());
        for chunk in instances.chunks(400) {
            let sql = format!(
                "SELECT instance_id, cpu, sampled_at FROM instance_samples WHERE instance_id IN ({})",
                crate::sql::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(&id.0);
            }
            for row in query.fetch_all(&self.pool).await? {
                use sqlx::Row;
                out.push(CpuSample {
                    instance: InstanceId(row.try_get("instance_id")?),
                    used: MilliCpu(crate::sql::uint("cpu sample", row.try_get("cpu")?)?),
                    sampled_at: crate::sql::time(row.try_get("sampled_at")?)?,
                });
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Stores a new group, at its minimum of nothing until the scaler's first tick, with its
    /// `created` event.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant))]
    pub async fn create_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: DateTime<Utc>,
    ) -> Result<Group> {
        self.get_tenant(tenant).await?;
        let id = GroupId(new_id(GroupId::PREFIX));
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, state, template, placement, policy, generation, revision, status, \
                 load_history, created_at, updated_at, labels, delete_protected) \
             VALUES ($1, $2, $3, 'active', $4, $5, $6, 1, 1, $7, $8, $9, $9, $10, $11)",
        )
        .bind(&id.0)
        .bind(&tenant.0)
        .bind(&spec.name)
        .bind(to_json(&spec.template))
        .bind(to_json(&spec.placement))
        .bind(to_json(&spec.policy))
        .bind(to_json(&Status::default()))
        .bind(to_json(&LoadHistory::default()))
        .bind(now_ms)
        .bind(to_json(&spec.labels))
        .bind(i64::from(eci_core::risk::is_protected(&spec.labels)))
        .execute(&mut *tx)
        .await
        .map_err(|e| named_conflict(e, "group"))?;
        let created = NewEvent {
            kind: EventKind::Created,
            current: 0,
            desired: 0,
            message: format!("group `{}` created in {} mode", spec.name, spec.policy.mode),
            details: serde_json::json!({ "generation": 1 }),
        };
        insert_events(&mut tx, &id, &[created], now_ms).await?;
        tx.commit().await?;
        self.get_group(tenant, &id).await
    }

    /// One of the tenant's groups, active or deleted.
    pub async fn get_group(&self, tenant: &TenantId, id: &GroupId) -> Result<Group> {
        let row =
            sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = $1 AND tenant_id = $2"))
                .bind(&id.0)
                .bind(&tenant.0)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| Error::NotFound { what: "group", id: id.0.clone() })?;
        group_from_row(&row)
    }

    /// A page of the tenant's groups, oldest first; deleted ones only when `state` asks for them.
    pub async fn list_groups(
        &self,
        tenant: &TenantId,
        state: GroupState,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Group>> {
        let keyset = Keyset::new(cursor, limit);
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM groups WHERE tenant_id = $1 AND state = $2 AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(&tenant.0)
        .bind(state.as_str())
        .bind(keyset.after)
        .bind(keyset.fetch())
        .fetch_all(&self.pool)
        .await?;
        let (rows, more) = keyset.split(rows);
        let items = rows.iter().map(group_from_row).collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |g| &g.id.0))
    }

    /// Replaces a group's name, template, placement and policy, if it is still at `generation`
    /// (the one the change was made from), with an `updated` event. New instances follow the new
    /// template; those running keep theirs.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, group.id = %id))]
    pub async fn update_group(
        &self,
        tenant: &TenantId,
        id: &GroupId,
        generation: u64,
        spec: &GroupSpec,
        now: DateTime<Utc>,
    ) -> Result<Group> {
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE groups SET name = $1, template = $2, placement = $3, policy = $4, \
                 generation = generation + 1, revision = revision + 1, updated_at = $5, labels = $9, \
                 delete_protected = $10 \
             WHERE id = $6 AND tenant_id = $7 AND generation = $8 AND state = 'active'",
        )
        .bind(&spec.name)
        .bind(to_json(&spec.template))
        .bind(to_json(&spec.placement))
        .bind(to_json(&spec.policy))
        .bind(now_ms)
        .bind(&id.0)
        .bind(&tenant.0)
        .bind(int(generation))
        .bind(to_json(&spec.labels))
        .bind(i64::from(eci_core::risk::is_protected(&spec.labels)))
        .execute(&mut *tx)
        .await
        .map_err(|e| named_conflict(e, "group"))?;
        if done.rows_affected() != 1 {
            drop(tx);
            let group = self.get_group(tenant, id).await?;
            return Err(match group.state {
                GroupState::Deleted => Error::NotFound { what: "group", id: id.0.clone() },
                GroupState::Active => Error::StaleGeneration(id.0.clone()),
            });
        }
        let status: Status = {
            let row = sqlx::query("SELECT status FROM groups WHERE id = $1")
                .bind(&id.0)
                .fetch_one(&mut *tx)
                .await?;
            json("group status", &row.try_get::<String, _>("status")?)?
        };
        let updated = NewEvent {
            kind: EventKind::Updated,
            current: status.current,
            desired: status.desired,
            message: format!(
                "group changed: min {}, max {}, {} mode",
                spec.policy.min, spec.policy.max, spec.policy.mode
            ),
            details: serde_json::json!({ "generation": generation + 1 }),
        };
        insert_events(&mut tx, id, &[updated], now_ms).await?;
        tx.commit().await?;
        self.get_group(tenant, id).await
    }

    /// Deletes a group and releases every live instance of it through the same release path as
    /// `DELETE` of a batch, held to risk control like it. Deleting a deleted group returns it
    /// unchanged.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, group.id = %id))]
    pub async fn delete_group(
        &self,
        tenant: &TenantId,
        id: &GroupId,
        deletion: &Deletion,
        now: DateTime<Utc>,
    ) -> Result<Group> {
        let group = self.get_group(tenant, id).await?;
        let now_ms = millis(now);
        let target = Target { kind: TargetKind::Group, id: &id.0, tenant };
        if group.state == GroupState::Active && eci_core::risk::is_protected(&group.labels) {
            let protected = Error::DeleteProtected { what: "group", id: id.0.clone() };
            return Err(self.refused(deletion, target, None, 0, protected, now_ms).await);
        }
        self.check_protection(deletion, target, Scope::Group(id), now_ms).await?;
        let rules = self.rules_for(tenant).await?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE groups SET state = 'deleted', deleted_at = $1, updated_at = $1, generation = generation + 1, \
                 revision = revision + 1, status = $4 \
             WHERE id = $2 AND tenant_id = $3 AND state = 'active'",
        )
        .bind(now_ms)
        .bind(&id.0)
        .bind(&tenant.0)
        .bind(to_json(&Status { decided_at: Some(now), reason: "deleted".into(), ..Status::default() }))
        .execute(&mut *tx)
        .await?;
        let mut released = Released::default();
        if done.rows_affected() == 1 {
            released = release_instances(&mut tx, Scope::Group(id), now_ms).await?;
            sqlx::query(
                "UPDATE batches SET state = 'released', ended_at = $1 WHERE group_id = $2 AND state = 'active'",
            )
            .bind(now_ms)
            .bind(&id.0)
            .execute(&mut *tx)
            .await?;
            let deleted = NewEvent {
                kind: EventKind::Deleted,
                current: 0,
                desired: 0,
                message: "group deleted; its instances are released".into(),
                details: serde_json::json!({}),
            };
            insert_events(&mut tx, id, &[deleted], now_ms).await?;
        }
        self.commit_release(tx, deletion, target, &released, &rules, now_ms).await?;
        self.get_group(tenant, id).await
    }

    /// Every active group of every tenant, with its load history: what one tick of the scaler
    /// looks at.
    pub async fn active_groups(&self) -> Result<Vec<Scaled>> {
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS}, load_history FROM groups WHERE state = 'active' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Scaled {
                    group: group_from_row(row)?,
                    history: json("load history", &row.try_get::<String, _>("load_history")?)?,
                })
            })
            .collect()
    }

    /// A group's live instances with their latest metric (CPU as a percentage of the request, or
    /// the tenant's custom metric), and its instances that failed after `failed_since`.
    pub async fn group_members(
        &self,
        group: &Group,
        failed_since: DateTime<Utc>,
    ) -> Result<(Vec<Member>, Vec<Failure>)> {
        let rows = sqlx::query(
            "SELECT i.id, i.idc_id, i.state, i.cpu, i.created_at, i.started_at, s.cpu AS used, s.sampled_at \
             FROM instances i JOIN batches b ON b.id = i.batch_id \
             LEFT JOIN instance_samples s ON s.instance_id = i.id \
             WHERE b.group_id = $1 AND b.state = 'active' AND i.state NOT IN ('terminated', 'failed') \
             ORDER BY i.id",
        )
        .bind(&group.id.0)
        .fetch_all(&self.pool)
        .await?;
        let metric = group.policy.load.as_ref().map(|l| l.metric);
        let custom = match metric {
            Some(eci_scaler::group::Metric::Custom) => self.custom_samples(&group.id).await?,
            _ => BTreeMap::new(),
        };
        let whole_group = custom.get("").copied();
        let mut members = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let request = uint("cpu", row.try_get("cpu")?)?;
            let metric = match metric {
                Some(eci_scaler::group::Metric::Cpu) => {
                    match (
                        row.try_get::<Option<i64>, _>("used")?,
                        row.try_get::<Option<i64>, _>("sampled_at")?,
                    ) {
                        (Some(used), Some(at)) => Some((
                            eci_scaler::group::cpu_percent(
                                MilliCpu(uint("cpu sample", used)?),
                                MilliCpu(request),
                            ),
                            time(at)?,
                        )),
                        _ => None,
                    }
                }
                Some(eci_scaler::group::Metric::Custom) => custom.get(id.as_str()).copied().or(whole_group),
                None => None,
            };
            members.push(Member {
                id: InstanceId(id),
                idc: IdcId(row.try_get("idc_id")?),
                state: word("instance state", &row.try_get::<String, _>("state")?)?,
                created_at: time(row.try_get("created_at")?)?,
                started_at: opt_time(row.try_get("started_at")?)?,
                metric,
            });
        }
        let failed = sqlx::query(
            "SELECT i.idc_id, i.ended_at FROM instances i JOIN batches b ON b.id = i.batch_id \
             WHERE b.group_id = $1 AND i.state = 'failed' AND i.ended_at > $2",
        )
        .bind(&group.id.0)
        .bind(millis(failed_since))
        .fetch_all(&self.pool)
        .await?;
        let failures = failed
            .iter()
            .map(|row| {
                Ok(Failure { idc: IdcId(row.try_get("idc_id")?), at: time(row.try_get("ended_at")?)? })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((members, failures))
    }

    async fn custom_samples(&self, group: &GroupId) -> Result<BTreeMap<String, (f64, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT instance_id, value, sampled_at FROM group_metric_samples WHERE group_id = $1",
        )
        .bind(&group.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((row.try_get("instance_id")?, (row.try_get("value")?, time(row.try_get("sampled_at")?)?)))
            })
            .collect()
    }

    /// Keeps the tenant's latest value of a group's custom metric: for one of its instances, or for
    /// the whole group (`None`). Refused for a deleted group or an instance not of the group.
    pub async fn record_custom_samples(
        &self,
        tenant: &TenantId,
        id: &GroupId,
        samples: &[(Option<InstanceId>, f64)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let group = self.get_group(tenant, id).await?;
        if group.state != GroupState::Active {
            return Err(Error::NotFound { what: "group", id: id.0.clone() });
        }
        let named: Vec<&InstanceId> = samples.iter().filter_map(|(i, _)| i.as_ref()).collect();
        if !named.is_empty() {
            let mut ours = BTreeSet::new();
            for chunk in named.chunks(400) {
                let sql = format!(
                    "SELECT i.id FROM instances i JOIN batches b ON b.id = i.batch_id \
                     WHERE b.group_id = $1 AND i.id IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut query = sqlx::query(&sql).bind(&id.0);
                for instance in chunk {
                    query = query.bind(&instance.0);
                }
                for row in query.fetch_all(&self.pool).await? {
                    ours.insert(row.try_get::<String, _>("id")?);
                }
            }
            if let Some(stranger) = named.iter().find(|i| !ours.contains(&i.0)) {
                return Err(Error::NotFound { what: "instance of the group", id: stranger.0.clone() });
            }
        }
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        for (instance, value) in samples {
            sqlx::query(
                "INSERT INTO group_metric_samples (group_id, instance_id, value, sampled_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, instance_id) DO UPDATE SET value = excluded.value, sampled_at = excluded.sampled_at",
            )
            .bind(&id.0)
            .bind(instance.as_ref().map_or("", |i| i.0.as_str()))
            .bind(*value)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Grows `group` (as read, at its revision) by up to `count` instances through the same
    /// allocation and batch transaction as `POST /v1/batches`, keeping away from `avoid`: whatever
    /// fits is placed. Refused with [`Error::StaleGeneration`] when the group changed since.
    #[tracing::instrument(skip_all, fields(group.id = %group.id, count))]
    pub async fn grow_group(
        &self,
        group: &Group,
        count: u32,
        avoid: &BTreeSet<IdcId>,
        now: DateTime<Utc>,
    ) -> Result<Grown> {
        let request = group.template.batch_request(&group.id, u64::from(count), &group.placement);
        let hash = crate::batches::request_hash(&request);
        let tenant = &group.tenant_id;
        let attempt = self
            .replanning(|| async {
                let (snapshot, allocation) = match self.allocate_batch(tenant, &request, avoid, now).await {
                    Ok(planned) => planned,
                    Err(Error::Placement(short)) => return Ok(Ok(Err(short.to_string()))),
                    Err(e) => return Err(e),
                };
                let into =
                    Stored { idempotency_key: None, hash: &hash, group: Some((&group.id, group.revision)) };
                Ok(self
                    .insert_batch(tenant, &request, into, &snapshot.fleet, &allocation, now)
                    .await?
                    .map(|(batch, instances)| Ok((batch, instances, allocation.placed()))))
            })
            .await?;
        match attempt {
            Ok((batch, instances, placed)) => {
                let mut by_idc: BTreeMap<IdcId, u64> = BTreeMap::new();
                for instance in &instances {
                    *by_idc.entry(instance.idc.clone()).or_default() += 1;
                }
                self.report_new_instances(instances, &request);
                let short = (placed < u64::from(count))
                    .then(|| format!("only {placed} of {count} fit the matching IDCs"));
                Ok(Grown { batch: Some(batch.id), placed: by_idc, short })
            }
            Err(short) => Ok(Grown { batch: None, placed: BTreeMap::new(), short: Some(short) }),
        }
    }

    /// Releases `instances` of `group` (as read, at its revision) through the same release path
    /// as `DELETE`, held to risk control as the scaler's scale-in (none of them released when it
    /// refuses: the scaler decides again at its next tick); refused with [`Error::StaleGeneration`]
    /// when the group changed since. Returns how many were released, by IDC.
    #[tracing::instrument(skip_all, fields(group.id = %group.id, count = instances.len()))]
    pub async fn shrink_group(
        &self,
        group: &Group,
        instances: &[InstanceId],
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<IdcId, u64>> {
        let now_ms = millis(now);
        let deletion = Deletion::by(ActorKind::Scaler);
        let target = Target { kind: TargetKind::ScaleIn, id: &group.id.0, tenant: &group.tenant_id };
        for id in instances {
            self.check_protection(&deletion, target, Scope::Instance(id), now_ms).await?;
        }
        let rules = self.rules_for(&group.tenant_id).await?;
        let mut tx = self.pool.begin().await?;
        advance_revision(&mut tx, &group.id, group.revision, now_ms).await?;
        let mut released = Released::default();
        for id in instances {
            let member = sqlx::query(
                "SELECT 1 FROM instances i JOIN batches b ON b.id = i.batch_id WHERE i.id = $1 AND b.group_id = $2",
            )
            .bind(&id.0)
            .bind(&group.id.0)
            .fetch_optional(&mut *tx)
            .await?;
            if member.is_none() {
                continue;
            }
            let one = release_instances(&mut tx, Scope::Instance(id), now_ms).await?;
            released.stopping.extend(one.stopping);
            for (idc, n) in one.per_idc {
                *released.per_idc.entry(idc).or_default() += n;
            }
        }
        let per_idc = released.per_idc.clone();
        self.commit_release(tx, &deletion, target, &released, &rules, now_ms).await?;
        Ok(per_idc)
    }

    /// Records what a tick saw and decided (its status, the load history and its events), if the
    /// group is still at `revision`; a group written to since keeps its record and the tick is lost.
    pub async fn record_group_tick(
        &self,
        group: &GroupId,
        revision: u64,
        status: &Status,
        history: &LoadHistory,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now_ms = millis(now);
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE groups SET status = $1, load_history = $2, updated_at = $3 \
             WHERE id = $4 AND revision = $5 AND state = 'active'",
        )
        .bind(to_json(status))
        .bind(to_json(history))
        .bind(now_ms)
        .bind(&group.0)
        .bind(int(revision))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::StaleGeneration(group.0.clone()));
        }
        insert_events(&mut tx, group, events, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A page of a group's events, oldest first, after `cursor` (an event id).
    pub async fn group_events(
        &self,
        tenant: &TenantId,
        id: &GroupId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<GroupEvent>> {
        self.get_group(tenant, id).await?;
        let keyset = Keyset::new(cursor, limit);
        let rows = sqlx::query(
            "SELECT id, at, kind, current, desired, message, details FROM group_events \
             WHERE group_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(&id.0)
        .bind(keyset.after)
        .bind(keyset.fetch())
        .fetch_all(&self.pool)
        .await?;
        let (rows, more) = keyset.split(rows);
        let items = rows.iter().map(event_from_row).collect::<Result<Vec<_>>>()?;
        Ok(keyset.finish(items, more, |e| &e.id))
    }
}

/// A unique-name violation names the group; other failures pass through.
fn named_conflict(e: sqlx::Error, what: &'static str) -> Error {
    match Error::from(e) {
        Error::Conflict { constraint, .. } => Error::Conflict { what, constraint },
        other => other,
    }
}
