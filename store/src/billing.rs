//! Billing's records: the price catalogue, what a tenant's instances ran (read as
//! [`MeteredInstance`]s for the rating in `eci-billing`), and final invoices, which are written once
//! and never rewritten. When a month's draft becomes final is billing's rule
//! ([`InvoiceState::settle`]); this module applies it to the invoices it keeps.
//!
//! Metering reads the instances' own lifecycle times (`started_at`, when an instance first ran, and
//! `ended_at`, when it was terminated or failed), so nothing is counted from events: a lifecycle
//! change seen twice, or a restart of the control plane, cannot add or lose a second. An instance
//! whose IDC is disconnected (`unknown`) has no end and is billed as running.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use eci_billing::{
    Catalogue, GroupBy, InvoiceState, MeteredInstance, Metering, Period, Price, PriceTier, StatementLine,
    Totals, Usage, Window, adjustments, invoice_lines, total_micros,
};
use eci_core::{Area, BatchId, Carrier, InstanceId, MiB, MilliCpu, Resources, Runtime, TenantId};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{json, millis, time, to_json, uint, word};
use crate::{Error, Result, Store};

/// How running time is billed and when a month's invoice becomes final.
#[derive(Debug, Clone, Copy)]
pub struct BillingPolicy {
    /// How running time turns into billed time; each deployment sets its own minimum charge.
    pub metering: Metering,
    /// How long after its month a draft invoice still takes corrections before it is final.
    pub grace: Duration,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        BillingPolicy { metering: Metering::default(), grace: Duration::days(3) }
    }
}

/// One tenant's invoice for one month.
#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    /// Whose invoice it is: invoices are per tenant.
    pub tenant_id: TenantId,
    /// The month it bills; its adjustment lines may correct earlier ones.
    pub period: Period,
    /// Whether its figures may still change.
    pub state: InvoiceState,
    /// When a draft was worked out, or when the invoice became final.
    pub as_of: DateTime<Utc>,
    /// What the customer checks the total against: usage per price, then adjustments.
    pub lines: Vec<StatementLine>,
    /// The exact sum of the lines, kept so that a listing needs no lines.
    pub total_micros: i64,
}

/// Which of a tenant's final invoices to read, by their month against a given one.
#[derive(Debug, Clone, Copy)]
enum Through {
    /// The months before it: those whose corrections a later invoice carries.
    Before,
    /// It and the months before it: those settled together, oldest first.
    UpTo,
    /// That month alone: the one another replica made final first.
    Exactly,
}

impl Through {
    /// How the `period` column compares to the month asked for. Periods are `YYYY-MM`, so they sort
    /// as text.
    fn sql(self) -> &'static str {
        match self {
            Through::Before => "<",
            Through::UpTo => "<=",
            Through::Exactly => "=",
        }
    }
}

/// A tenant's months up to some month, with the final invoices among them.
struct Settled {
    periods: Vec<Period>,
    finals: BTreeMap<Period, Invoice>,
    /// How many of those were made final just now.
    made: usize,
}

/// One instance's cost so far.
#[derive(Debug, Clone)]
pub struct InstanceCost {
    /// The instance as metered, for its id and its start and end.
    pub instance: MeteredInstance,
    /// What it has cost so far.
    pub totals: Totals,
}

/// A batch's cost so far.
#[derive(Debug, Clone)]
pub struct BatchCost {
    /// The batch asked about.
    pub batch_id: BatchId,
    /// Instances still running are costed up to this moment.
    pub as_of: DateTime<Utc>,
    /// The exact sum of the instances' costs.
    pub total: Totals,
    /// Each instance's cost, in id order, for callers that list them.
    pub instances: Vec<InstanceCost>,
}

/// A group's cost so far.
#[derive(Debug, Clone)]
pub struct GroupCost {
    /// The group asked about.
    pub group_id: eci_core::GroupId,
    /// Instances still running are costed up to this moment.
    pub as_of: DateTime<Utc>,
    /// The exact sum of the instances' costs.
    pub total: Totals,
    /// Each instance's cost, in id order, for callers that list them.
    pub instances: Vec<InstanceCost>,
}

fn price_from_row(row: &AnyRow) -> Result<Price> {
    let micros = |column: &'static str| -> Result<u64> { uint(column, row.try_get(column)?) };
    Ok(Price {
        id: row.try_get("id")?,
        runtime: word("runtime", &row.try_get::<String, _>("runtime")?)?,
        tier: PriceTier {
            region: row.try_get("region")?,
            province: row.try_get("province")?,
            city: row.try_get("city")?,
            carrier: row.try_get::<Option<String>, _>("carrier")?.map(|c| word("carrier", &c)).transpose()?,
        },
        effective_from_ms: row.try_get("effective_from")?,
        cpu_micros_per_vcpu_second: micros("cpu_micros")?,
        memory_micros_per_gib_second: micros("memory_micros")?,
        gpu_micros_per_gpu_second: micros("gpu_micros")?,
    })
}

fn signed(what: &'static str, n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::InvalidPrice(format!("{what} {n} is too large")))
}

/// What `metered_instances` and `batch_cost` read of an instance: its id, the columns of its
/// [`Cohort`] joined by spaces into one text, and its start and end. sqlx's `Any` driver copies
/// every value of every row into a representation of its own (a column description and a fresh
/// copy each), which was most of the time of reading a month of 100,000 instances: joined, a row
/// has four values instead of twelve. None of the joined columns can hold a space (ids, product
/// words, numbers and area codes, which are checked when IDCs are loaded); one that did would be
/// refused as corrupt, never misread.
const METERED_COLUMNS: &str = "id, batch_id || ' ' || runtime || ' ' || cpu || ' ' || memory || ' ' || gpu \
     || ' ' || carrier || ' ' || region || ' ' || province || ' ' || city, started_at, ended_at";

/// What the instances of one batch placed in one area on one carrier have in common: thousands of
/// rows of a month share one.
#[derive(Debug)]
struct Cohort {
    batch: BatchId,
    runtime: Runtime,
    resources: Resources,
    carrier: Carrier,
    area: Area,
}

impl Cohort {
    fn parse(joined: &str) -> Result<Cohort> {
        let corrupt = || Error::Corrupt { what: "metered instance", why: format!("cannot read `{joined}`") };
        let number = |n: &str| n.parse::<i64>().map_err(|_| corrupt());
        let parts: Vec<&str> = joined.split(' ').collect();
        let [batch, runtime, cpu, memory, gpu, carrier, region, province, city] = parts[..] else {
            return Err(corrupt());
        };
        Ok(Cohort {
            batch: BatchId(batch.to_owned()),
            runtime: word("runtime", runtime)?,
            resources: Resources::new(
                MilliCpu(uint("cpu", number(cpu)?)?),
                MiB(uint("memory", number(memory)?)?),
                u32::try_from(uint("gpu", number(gpu)?)?).unwrap_or(u32::MAX),
            ),
            carrier: word("carrier", carrier)?,
            area: Area::new(region, province, city),
        })
    }
}

/// Reads rows of [`METERED_COLUMNS`], parsing each cohort once.
#[derive(Default)]
struct MeteredReader {
    cohorts: HashMap<String, Cohort>,
}

impl MeteredReader {
    fn instance(&mut self, row: &AnyRow) -> Result<MeteredInstance> {
        let joined: &str = row.try_get(1)?;
        let cohort = match self.cohorts.get(joined) {
            Some(cohort) => cohort,
            None => self.cohorts.entry(joined.to_owned()).or_insert(Cohort::parse(joined)?),
        };
        Ok(MeteredInstance {
            id: InstanceId(row.try_get(0)?),
            batch: cohort.batch.clone(),
            runtime: cohort.runtime,
            area: cohort.area.clone(),
            carrier: cohort.carrier,
            resources: cohort.resources,
            labels: BTreeMap::new(),
            started_ms: row.try_get(2)?,
            ended_ms: row.try_get(3)?,
        })
    }
}

/// `columns` of the tenant's (`$1`) instances that ran at some moment of a window (`$3` to `$2`):
/// those still live, then those that ended in it or later. Each half is one range of
/// `instances_metered_by_end`, which holds every column usage reads, so PostgreSQL answers from the
/// index alone and never steps over the instances that ended before the window.
fn ran_in_window(columns: &str) -> String {
    let started = "started_at IS NOT NULL AND started_at < $2";
    format!(
        "SELECT {columns} FROM instances WHERE tenant_id = $1 AND ended_at IS NULL AND {started} \
         UNION ALL SELECT {columns} FROM instances WHERE tenant_id = $1 AND ended_at >= $3 AND {started}"
    )
}

impl Store {
    /// The whole price catalogue, validated.
    pub async fn price_catalogue(&self) -> Result<Catalogue> {
        let rows = sqlx::query(
            "SELECT id, runtime, region, province, city, carrier, effective_from, cpu_micros, memory_micros, \
             gpu_micros FROM prices ORDER BY effective_from, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let prices = rows.iter().map(price_from_row).collect::<Result<Vec<_>>>()?;
        Catalogue::new(prices).map_err(|e| Error::Corrupt { what: "price catalogue", why: e.to_string() })
    }

    /// Adds a price version. Prices never change the past: a version takes effect now or later, so
    /// what was billed stays what it was.
    pub async fn add_price(&self, price: Price, now: DateTime<Utc>) -> Result<Price> {
        if price.effective_from_ms < millis(now) {
            return Err(Error::InvalidPrice(format!(
                "price `{}` would take effect in the past ({} ms, now is {} ms); prices apply from now on",
                price.id,
                price.effective_from_ms,
                millis(now)
            )));
        }
        let mut prices = self.price_catalogue().await?.prices().to_vec();
        prices.push(price.clone());
        Catalogue::new(prices).map_err(|e| Error::InvalidPrice(e.to_string()))?;
        sqlx::query(
            "INSERT INTO prices (id, runtime, region, province, city, carrier, effective_from, cpu_micros, \
             memory_micros, gpu_micros, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&price.id)
        .bind(price.runtime.as_str())
        .bind(&price.tier.region)
        .bind(&price.tier.province)
        .bind(&price.tier.city)
        .bind(price.tier.carrier.map(|c| c.as_str()))
        .bind(price.effective_from_ms)
        .bind(signed("cpu price", price.cpu_micros_per_vcpu_second)?)
        .bind(signed("memory price", price.memory_micros_per_gib_second)?)
        .bind(signed("gpu price", price.gpu_micros_per_gpu_second)?)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(price)
    }

    /// Withdraws a price version that has not taken effect yet; one in force is history and stays.
    pub async fn withdraw_price(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query("DELETE FROM prices WHERE id = $1 AND effective_from > $2")
            .bind(id)
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let exists =
            sqlx::query("SELECT 1 FROM prices WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        match exists {
            Some(_) => Err(Error::InvalidPrice(format!(
                "price `{id}` is already in force; publish a new version instead of withdrawing it"
            ))),
            None => Err(Error::NotFound { what: "price", id: id.to_string() }),
        }
    }

    /// The tenant's instances that ran at some moment of `window` (or whose end falls in it), with
    /// their batches' labels when asked for.
    pub async fn metered_instances(
        &self,
        tenant: &TenantId,
        window: Window,
        with_labels: bool,
    ) -> Result<Vec<MeteredInstance>> {
        // Each row becomes an instance as it arrives, so the driver's rows are never all held at once.
        let mut reader = MeteredReader::default();
        let read = sqlx::query(&ran_in_window(METERED_COLUMNS))
            .bind(&tenant.0)
            .bind(window.to_ms())
            .bind(window.from_ms())
            .map(|row: AnyRow| reader.instance(&row))
            .fetch_all(&self.pool)
            .await?;
        let mut instances = read.into_iter().collect::<Result<Vec<_>>>()?;
        if with_labels {
            let rows = sqlx::query(&format!(
                "SELECT batch_id, key, value FROM batch_labels WHERE batch_id IN ({})",
                ran_in_window("batch_id")
            ))
            .bind(&tenant.0)
            .bind(window.to_ms())
            .bind(window.from_ms())
            .fetch_all(&self.pool)
            .await?;
            let mut labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for row in rows {
                labels
                    .entry(row.try_get("batch_id")?)
                    .or_default()
                    .insert(row.try_get("key")?, row.try_get("value")?);
            }
            for instance in &mut instances {
                if let Some(of_batch) = labels.get(&instance.batch.0) {
                    instance.labels = of_batch.clone();
                }
            }
        }
        Ok(instances)
    }

    /// The tenant's usage and cost in `window` as of `now`, overall and grouped.
    pub async fn usage(
        &self,
        tenant: &TenantId,
        window: Window,
        group_by: Option<&GroupBy>,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Usage> {
        let with_labels = matches!(group_by, Some(GroupBy::Label(_)));
        let instances = self.metered_instances(tenant, window, with_labels).await?;
        let catalogue = self.price_catalogue().await?;
        Ok(eci_billing::usage(&instances, &catalogue, &policy.metering, window, millis(now), group_by)?)
    }

    /// What a batch's instances have cost so far, in all and one by one.
    pub async fn batch_cost(
        &self,
        tenant: &TenantId,
        batch: &BatchId,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<BatchCost> {
        let found = self.get_batch(tenant, batch).await?;
        let rows = sqlx::query(&format!(
            "SELECT {METERED_COLUMNS} FROM instances WHERE batch_id = $1 AND tenant_id = $2 ORDER BY id"
        ))
        .bind(&batch.0)
        .bind(&tenant.0)
        .fetch_all(&self.pool)
        .await?;
        let (total, instances) = self.cost_since(&rows, found.created_at, policy, now).await?;
        Ok(BatchCost { batch_id: batch.clone(), as_of: now, total, instances })
    }

    /// What a group's instances have cost so far, in all and one by one (those of every batch it
    /// grew by, whether it still holds them or not).
    pub async fn group_cost(
        &self,
        tenant: &TenantId,
        group: &eci_core::GroupId,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<GroupCost> {
        let found = self.get_group(tenant, group).await?;
        let rows = sqlx::query(&format!(
            "SELECT {METERED_COLUMNS} FROM instances WHERE tenant_id = $1 \
             AND batch_id IN (SELECT id FROM batches WHERE group_id = $2) ORDER BY id"
        ))
        .bind(&tenant.0)
        .bind(&group.0)
        .fetch_all(&self.pool)
        .await?;
        let (total, instances) = self.cost_since(&rows, found.created_at, policy, now).await?;
        Ok(GroupCost { group_id: group.clone(), as_of: now, total, instances })
    }

    /// Rates metered instances' rows from `since` to just past now: every second any of them ran.
    async fn cost_since(
        &self,
        rows: &[AnyRow],
        since: DateTime<Utc>,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<(Totals, Vec<InstanceCost>)> {
        let catalogue = self.price_catalogue().await?;
        let now_ms = millis(now);
        let window = Window::new(millis(since), now_ms.max(millis(since)) + 1)?;
        let mut total = Totals::default();
        let mut instances = Vec::with_capacity(rows.len());
        let mut reader = MeteredReader::default();
        for row in rows {
            let instance = reader.instance(row)?;
            let mut totals = Totals::default();
            for charge in eci_billing::rate(&instance, &catalogue, &policy.metering, window, now_ms)? {
                totals.add(&charge)?;
            }
            total.merge(&totals)?;
            instances.push(InstanceCost { instance, totals });
        }
        Ok((total, instances))
    }

    /// The months the tenant has invoices for, oldest first: from the month it was created to now's.
    async fn invoice_periods(&self, tenant: &TenantId, now: DateTime<Utc>) -> Result<Vec<Period>> {
        let created = self.get_tenant(tenant).await?.created_at;
        let first = Period::containing(millis(created)).ok_or_else(|| Error::Corrupt {
            what: "tenant",
            why: format!("created at {created}, outside the calendar"),
        })?;
        let last = Period::containing(millis(now)).unwrap_or(first);
        let mut periods = vec![first];
        while let Some(next) = periods.last().and_then(Period::next).filter(|p| *p <= last) {
            periods.push(next);
        }
        Ok(periods)
    }

    /// The tenant's invoice for `period`: final if it was made final, or is due to be (its month and
    /// grace period are over, in which case it is made final now, once); a draft otherwise.
    pub async fn invoice(
        &self,
        tenant: &TenantId,
        period: Period,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Invoice> {
        let settled = self.settle(tenant, period, policy, now).await?;
        if !settled.periods.contains(&period) {
            return Err(Error::NotFound { what: "invoice", id: period.to_string() });
        }
        let mut finals = settled.finals;
        match finals.remove(&period) {
            Some(done) => Ok(done),
            None => self.draft(tenant, period, policy, now).await,
        }
    }

    /// Every invoice of the tenant, oldest first, as [`invoice`](Self::invoice) would give each.
    pub async fn invoices(
        &self,
        tenant: &TenantId,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Invoice>> {
        let current = Period::containing(millis(now))
            .ok_or_else(|| Error::Corrupt { what: "clock", why: format!("{now} is outside the calendar") })?;
        let Settled { periods, mut finals, .. } = self.settle(tenant, current, policy, now).await?;
        let mut invoices = Vec::with_capacity(periods.len());
        for period in periods {
            invoices.push(match finals.remove(&period) {
                Some(done) => done,
                None => self.draft(tenant, period, policy, now).await?,
            });
        }
        Ok(invoices)
    }

    /// Makes every tenant's due invoices final; returns how many became final.
    pub async fn finalize_due_invoices(&self, policy: &BillingPolicy, now: DateTime<Utc>) -> Result<usize> {
        let Some(current) = Period::containing(millis(now)) else { return Ok(0) };
        let mut made = 0;
        for tenant in self.list_tenants().await? {
            made += self.settle(&tenant.id, current, policy, now).await?.made;
        }
        Ok(made)
    }

    /// Makes the tenant's invoices up to `through` that [`InvoiceState::settle`] says are due final,
    /// oldest first (a final invoice carries the corrections of those before it), with one read of
    /// those already final.
    async fn settle(
        &self,
        tenant: &TenantId,
        through: Period,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Settled> {
        let mut periods = self.invoice_periods(tenant, now).await?;
        periods.retain(|p| *p <= through);
        let mut finals: BTreeMap<Period, Invoice> = self
            .final_invoices(tenant, Through::UpTo, through)
            .await?
            .into_iter()
            .map(|invoice| (invoice.period, invoice))
            .collect();
        let (grace_ms, now_ms) = (policy.grace.num_milliseconds(), millis(now));
        let mut made = 0;
        for period in &periods {
            let kept = if finals.contains_key(period) { InvoiceState::Final } else { InvoiceState::Draft };
            if kept.settle(*period, grace_ms, now_ms) != kept {
                finals.insert(*period, self.finalize(tenant, *period, policy, now).await?);
                made += 1;
            }
        }
        Ok(Settled { periods, finals, made })
    }

    async fn draft(
        &self,
        tenant: &TenantId,
        period: Period,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Invoice> {
        let lines = self.invoice_lines_now(tenant, period, policy, now).await?;
        Ok(Invoice {
            tenant_id: tenant.clone(),
            period,
            state: InvoiceState::Draft,
            as_of: now,
            total_micros: total_micros(&lines),
            lines,
        })
    }

    async fn finalize(
        &self,
        tenant: &TenantId,
        period: Period,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Invoice> {
        let lines = self.invoice_lines_now(tenant, period, policy, now).await?;
        let total = total_micros(&lines);
        let inserted = sqlx::query(
            "INSERT INTO invoices (tenant_id, period, finalized_at, total_micros, lines) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&tenant.0)
        .bind(period.to_string())
        .bind(millis(now))
        .bind(total)
        .bind(to_json(&lines))
        .execute(&self.pool)
        .await
        .map_err(Error::from);
        match inserted {
            Ok(_) => {
                tracing::info!(tenant.id = %tenant, %period, total_micros = total, "invoice final");
                Ok(Invoice {
                    tenant_id: tenant.clone(),
                    period,
                    state: InvoiceState::Final,
                    as_of: time(millis(now))?,
                    lines,
                    total_micros: total,
                })
            }
            // Another replica made it final first; theirs is the one.
            Err(Error::Conflict { .. }) => self
                .final_invoices(tenant, Through::Exactly, period)
                .await?
                .pop()
                .ok_or_else(|| Error::NotFound { what: "invoice", id: period.to_string() }),
            Err(e) => Err(e),
        }
    }

    /// A month's lines as of `now`: its usage, then the adjustments of earlier final months whose
    /// instances changed after those became final.
    async fn invoice_lines_now(
        &self,
        tenant: &TenantId,
        period: Period,
        policy: &BillingPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<StatementLine>> {
        let catalogue = self.price_catalogue().await?;
        let now_ms = millis(now);
        let usage_lines = |instances: &[MeteredInstance], month: Period| -> Result<Vec<StatementLine>> {
            let lines = invoice_lines(instances, &catalogue, &policy.metering, month.window(), now_ms)?;
            Ok(lines.iter().map(|line| StatementLine::usage(month, line)).collect())
        };
        let mut lines = usage_lines(&self.metered_instances(tenant, period.window(), false).await?, period)?;
        let finals = self.final_invoices(tenant, Through::Before, period).await?;
        for (index, earlier) in finals.iter().enumerate() {
            let month = earlier.period;
            if !self.changed_since(tenant, month, earlier.as_of).await? {
                continue;
            }
            // What was billed for that month: its own lines and the adjustments made of it since.
            let billed: Vec<StatementLine> = finals[index..]
                .iter()
                .flat_map(|invoice| invoice.lines.iter().filter(|l| l.period == month).cloned())
                .collect();
            let now_lines =
                usage_lines(&self.metered_instances(tenant, month.window(), false).await?, month)?;
            lines.extend(adjustments(month, &now_lines, &billed));
        }
        Ok(lines)
    }

    /// The tenant's final invoices of the months `through` picks against `period`, oldest first.
    async fn final_invoices(
        &self,
        tenant: &TenantId,
        through: Through,
        period: Period,
    ) -> Result<Vec<Invoice>> {
        let rows = sqlx::query(&format!(
            "SELECT period, finalized_at, total_micros, lines FROM invoices \
             WHERE tenant_id = $1 AND period {} $2 ORDER BY period",
            through.sql()
        ))
        .bind(&tenant.0)
        .bind(period.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| final_invoice_from_row(tenant, row)).collect()
    }

    /// Whether any instance that may have run in `month` changed at or after `since`. Only such a change
    /// (an end recorded or corrected) can change a past month: prices never change the past.
    async fn changed_since(&self, tenant: &TenantId, month: Period, since: DateTime<Utc>) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM instances WHERE tenant_id = $1 AND updated_at >= $2 \
             AND started_at IS NOT NULL AND started_at < $3 LIMIT 1",
        )
        .bind(&tenant.0)
        .bind(millis(since))
        .bind(month.window().to_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

fn final_invoice_from_row(tenant: &TenantId, row: &AnyRow) -> Result<Invoice> {
    Ok(Invoice {
        tenant_id: tenant.clone(),
        period: row.try_get::<String, _>("period")?.parse()?,
        state: InvoiceState::Final,
        as_of: time(row.try_get("finalized_at")?)?,
        total_micros: row.try_get("total_micros")?,
        lines: json("invoice lines", &row.try_get::<String, _>("lines")?)?,
    })
}
