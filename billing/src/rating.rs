//! Rating: what an instance's metered time costs, as charges in integer micro-units of currency.
//!
//! # Pieces
//!
//! An instance's metered span, `[started, end)` with `end` its end or, while it is live, `now`, is
//! cut into pieces at every moment the price it pays changes and at every 00:00 UTC. Each piece has
//! one day and one price, and becomes one [`Charge`]. The top-up, billed time beyond running time
//! (rounding up to whole seconds, or the minimum charge), is priced at `end`, on the day and under
//! the price in force at `end`. It joins the last piece when that piece has the same day and price,
//! and is a charge of its own otherwise (an instance ending exactly at midnight, or exactly when a
//! price changes).
//!
//! # Windows
//!
//! Usage is asked for a [`Window`]. Only the parts of pieces inside it count, and the top-up counts
//! in the window that contains `end`. An instance that never started costs nothing.
//!
//! # The rounding rule
//!
//! A charge's amount in each dimension is rounded exactly once, to the nearest micro-unit, halves
//! up, from its exact rational value:
//!
//! - cpu: `milli_vcpu * ms * cpu_micros_per_vcpu_second / (1000 * 1000)`
//! - memory: `mib * ms * memory_micros_per_gib_second / (1024 * 1000)`
//! - gpu: `gpus * ms * gpu_micros_per_gpu_second / 1000`
//!
//! Nothing else is ever rounded: every total (of a batch, a label, an area, a carrier, a runtime, a
//! day, an invoice line) is an exact sum of charges, so totals add up across any grouping to the
//! micro-unit.
//!
//! # Splitting a window
//!
//! Splitting a window `[a, c)` at a moment `b` cuts at most one charge of each instance in two: the
//! piece running through `b`, or, for an instance ending at `b`, its last piece and its top-up. The
//! whole and each part are rounded once, each off by at most half a micro-unit, so in each dimension
//! the parts add up to within 3/2 of the whole, and being integers, to within 1:
//!
//! `|amount[a, c) - (amount[a, b) + amount[b, c))| <= 1` micro-unit per dimension per instance
//! (so at most 3 per instance, and at most 3 times the number of instances overall).
//!
//! Billed milliseconds are never rounded and always split exactly. At 00:00 UTC (or any moment at
//! which no charge is cut) the amounts split exactly too: daily usage adds up to monthly invoices.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, SecondsFormat};
use eci_core::{Area, Carrier, InstanceId, Resources, Runtime};

use crate::catalogue::{Catalogue, Price, Timeline, runtime_index};
use crate::meter::{DAY_MS, MeteredInstance, Metering, Window};

/// An amount of money in millionths of the currency unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub u64);

/// What was consumed, in the smallest units there are, so that nothing is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quantities {
    /// The CPU an amount is for, in milli-vCPU-milliseconds.
    pub cpu_milli_vcpu_ms: u128,
    /// The memory an amount is for, in MiB-milliseconds.
    pub memory_mib_ms: u128,
    /// The GPUs an amount is for, in GPU-milliseconds.
    pub gpu_ms: u128,
}

/// What was consumed costs, per dimension and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amounts {
    /// What the CPU costs, so that a customer can check it against the CPU price.
    pub cpu: Micros,
    /// What the memory costs, for the same check.
    pub memory: Micros,
    /// What the GPUs cost, for the same check.
    pub gpu: Micros,
    /// `cpu + memory + gpu`, summed once here so that no reader adds (or overflows) it again.
    pub total: Micros,
}

/// One piece of an instance's metered time: one day, one price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge<'c> {
    /// The UTC day the piece lies in.
    pub day: NaiveDate,
    /// The price the piece is charged at, by which charges add up into invoice lines.
    pub price: &'c Price,
    /// Billed milliseconds: the piece's running time plus `top_up_ms`.
    pub ms: i64,
    /// The part of `ms` that is billed beyond running time; non-zero only on the charge at the end.
    pub top_up_ms: i64,
    /// What the piece consumed, exactly.
    pub quantities: Quantities,
    /// What it costs, each dimension rounded once.
    pub amounts: Amounts,
}

/// What a set of charges adds up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Billed time, summed exactly: it is never rounded.
    pub billed_ms: i64,
    /// What was consumed, summed exactly.
    pub quantities: Quantities,
    /// What it costs: exact sums of amounts rounded once each, so totals add up across groupings.
    pub amounts: Amounts,
}

impl Totals {
    /// Adds one charge; fails only when a total no longer fits its integer.
    pub fn add(&mut self, charge: &Charge<'_>) -> Result<(), RatingError> {
        self.add_parts(charge.ms, &charge.quantities, &charge.amounts)
    }

    /// Adds another set of totals.
    pub fn merge(&mut self, other: &Totals) -> Result<(), RatingError> {
        self.add_parts(other.billed_ms, &other.quantities, &other.amounts)
    }

    pub(crate) fn add_parts(&mut self, ms: i64, q: &Quantities, a: &Amounts) -> Result<(), RatingError> {
        let sum = || {
            let mine = &self.quantities;
            let amounts = &self.amounts;
            Some(Totals {
                billed_ms: self.billed_ms.checked_add(ms)?,
                quantities: Quantities {
                    cpu_milli_vcpu_ms: mine.cpu_milli_vcpu_ms.checked_add(q.cpu_milli_vcpu_ms)?,
                    memory_mib_ms: mine.memory_mib_ms.checked_add(q.memory_mib_ms)?,
                    gpu_ms: mine.gpu_ms.checked_add(q.gpu_ms)?,
                },
                amounts: Amounts {
                    cpu: Micros(amounts.cpu.0.checked_add(a.cpu.0)?),
                    memory: Micros(amounts.memory.0.checked_add(a.memory.0)?),
                    gpu: Micros(amounts.gpu.0.checked_add(a.gpu.0)?),
                    total: Micros(amounts.total.0.checked_add(a.total.0)?),
                },
            })
        };
        *self = sum().ok_or(RatingError::TotalOverflow)?;
        Ok(())
    }
}

/// Why an instance could not be rated. Nothing is ever billed as zero for want of a price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    /// The catalogue has a gap: the operator must add a price rather than bill the time as free.
    #[error(
        "no price applies to instance `{instance}` ({runtime} in {}/{}/{} on {carrier}) at {}",
        .area.region, .area.province, .area.city, moment(*.at_ms)
    )]
    Unpriced {
        /// The instance no price applies to.
        instance: InstanceId,
        /// Its runtime, area and carrier are what a price is looked up by.
        runtime: Runtime,
        /// Its area.
        area: Area,
        /// Its carrier.
        carrier: Carrier,
        /// The first moment it is unpriced.
        at_ms: i64,
    },
    /// A record that ends before it starts is corrupt, and rating it would bill negative time.
    #[error("instance `{instance}` ends at {} before it starts at {}", moment(*.ended_ms), moment(*.started_ms))]
    EndsBeforeStart {
        /// The instance whose record it is.
        instance: InstanceId,
        /// When it is recorded to have started.
        started_ms: i64,
        /// When it is recorded to have ended.
        ended_ms: i64,
    },
    /// A moment without a date cannot be cut into days.
    #[error("instance `{instance}` is metered at {ms} ms, outside the years 1 to 9999")]
    OutOfCalendar {
        /// The instance metered there.
        instance: InstanceId,
        /// The moment.
        ms: i64,
    },
    /// An amount beyond 64 bits of micro-units is no real bill but a corrupt record or price.
    #[error("the amount of instance `{instance}` is too large to represent")]
    AmountOverflow {
        /// The instance whose amount it is.
        instance: InstanceId,
    },
    /// A sum beyond what its integer holds would otherwise wrap silently.
    #[error("a total is too large to represent")]
    TotalOverflow,
}

/// A moment as people read it, for error messages.
fn moment(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms} ms"), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// A charge before it is dressed for callers: the day as a number and the price as an index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    /// Days since 1970-01-01 (UTC).
    pub(crate) day: i64,
    /// Index into the catalogue's prices.
    pub(crate) price: usize,
    pub(crate) ms: i64,
    pub(crate) top_up_ms: i64,
    pub(crate) quantities: Quantities,
    pub(crate) amounts: Amounts,
}

/// Rates many instances against one catalogue, for one window, as of one `now`.
///
/// The price timeline of each kind of instance (runtime, area, carrier) is worked out once and
/// kept, so rating an instance costs at most one hash lookup and one binary search, then integer
/// arithmetic per piece, and allocates nothing.
pub struct Rater<'c> {
    catalogue: &'c Catalogue,
    metering: Metering,
    window: Window,
    now_ms: i64,
    timelines: Timelines<'c>,
}

/// Per area, the timelines of its 3 runtimes x 4 carriers, filled as instances need them.
#[derive(Default)]
struct Timelines<'c> {
    areas: Vec<(Area, [Option<Timeline<'c>>; 12])>,
    index: HashMap<Area, usize>,
    /// The area of the previous lookup: instances of a batch come together and share few areas,
    /// and comparing with the last one is cheaper than hashing.
    last: usize,
}

impl<'c> Timelines<'c> {
    /// The timeline of `instance`'s kind, worked out on first use.
    fn of(&mut self, catalogue: &'c Catalogue, instance: &MeteredInstance) -> &Timeline<'c> {
        let area = &instance.area;
        if self.areas.get(self.last).is_none_or(|(a, _)| a != area) {
            self.last = match self.index.get(area) {
                Some(&i) => i,
                None => {
                    self.areas.push((area.clone(), Default::default()));
                    self.index.insert(area.clone(), self.areas.len() - 1);
                    self.areas.len() - 1
                }
            };
        }
        let carrier = match instance.carrier {
            Carrier::Telecom => 0,
            Carrier::Unicom => 1,
            Carrier::Mobile => 2,
            Carrier::Bgp => 3,
        };
        self.areas[self.last].1[runtime_index(instance.runtime) * 4 + carrier]
            .get_or_insert_with(|| catalogue.timeline(instance.runtime, area, instance.carrier))
    }
}

impl<'c> Rater<'c> {
    /// A rater for one catalogue, metering, window and `now`, so that the timelines it works out
    /// serve every instance it rates.
    pub fn new(catalogue: &'c Catalogue, metering: &Metering, window: Window, now_ms: i64) -> Self {
        Rater { catalogue, metering: *metering, window, now_ms, timelines: Timelines::default() }
    }

    /// Calls `on_charge` with each charge of `instance` inside the window, in time order.
    pub fn rate(
        &mut self,
        instance: &MeteredInstance,
        mut on_charge: impl FnMut(Charge<'c>),
    ) -> Result<(), RatingError> {
        let prices = self.catalogue.prices();
        self.pieces(instance, |piece| {
            on_charge(Charge {
                day: date(piece.day),
                price: &prices[piece.price],
                ms: piece.ms,
                top_up_ms: piece.top_up_ms,
                quantities: piece.quantities,
                amounts: piece.amounts,
            });
            Ok(())
        })
    }

    /// The pieces of `instance` inside the window, in time order, as the module docs lay them out.
    pub(crate) fn pieces(
        &mut self,
        instance: &MeteredInstance,
        mut sink: impl FnMut(&Piece) -> Result<(), RatingError>,
    ) -> Result<(), RatingError> {
        let Some(start) = instance.started_ms else {
            return Ok(());
        };
        let end = match instance.ended_ms {
            Some(ended) if ended < start => {
                return Err(RatingError::EndsBeforeStart {
                    instance: instance.id.clone(),
                    started_ms: start,
                    ended_ms: ended,
                });
            }
            Some(ended) => ended,
            // Replicas' clocks may disagree by a little: a start "after now" has just happened.
            None => self.now_ms.max(start),
        };
        for ms in [start, end] {
            if !Window::in_calendar(ms) {
                return Err(RatingError::OutOfCalendar { instance: instance.id.clone(), ms });
            }
        }
        let (from, to) = (self.window.from_ms(), self.window.to_ms());
        let top_up = self.metering.billed_ms(end - start) - (end - start);
        let mut top_up_due = top_up > 0 && self.window.contains(end);
        let (lo, hi) = (start.max(from), end.min(to));
        if lo >= hi && !top_up_due {
            return Ok(());
        }

        let timeline = self.timelines.of(self.catalogue, instance);
        let prices = self.catalogue.prices();
        let unpriced = |at_ms| RatingError::Unpriced {
            instance: instance.id.clone(),
            runtime: instance.runtime,
            area: instance.area.clone(),
            carrier: instance.carrier,
            at_ms,
        };
        let price_of = |piece_day: i64, price: usize, ms: i64, top_up_ms: i64| {
            let (quantities, amounts) = charge(&instance.resources, &prices[price], ms)
                .ok_or_else(|| RatingError::AmountOverflow { instance: instance.id.clone() })?;
            Ok(Piece { day: piece_day, price, ms, top_up_ms, quantities, amounts })
        };

        let steps = &timeline.steps;
        let mut passed = timeline.passed(lo);
        let mut t = lo;
        while t < hi {
            if steps.get(passed).is_some_and(|s| s.from_ms <= t) {
                passed += 1;
            }
            let price = passed.checked_sub(1).map(|i| steps[i].price).ok_or_else(|| unpriced(t))?;
            let change = steps.get(passed).map_or(i64::MAX, |s| s.from_ms);
            let day = t.div_euclid(DAY_MS);
            let midnight = (day + 1) * DAY_MS;
            let piece_end = hi.min(change).min(midnight);
            let joins = top_up_due && piece_end == end && end < midnight && end < change;
            let top_up_ms = if joins { top_up } else { 0 };
            top_up_due &= !joins;
            sink(&price_of(day, price, piece_end - t + top_up_ms, top_up_ms)?)?;
            t = piece_end;
        }
        if top_up_due {
            let passed = timeline.passed(end);
            let price = passed.checked_sub(1).map(|i| steps[i].price).ok_or_else(|| unpriced(end))?;
            sink(&price_of(end.div_euclid(DAY_MS), price, top_up, top_up)?)?;
        }
        Ok(())
    }
}

/// The date of a day number. Every piece lies inside a window, and windows inside the calendar.
pub(crate) fn date(day: i64) -> NaiveDate {
    i32::try_from(day)
        .ok()
        .and_then(NaiveDate::from_epoch_days)
        .expect("days of moments inside a window are dates")
}

/// The quantities and amounts of `ms` of `resources` under `price`, by the rounding rule; `None` if
/// an amount does not fit 64 bits.
pub(crate) fn charge(resources: &Resources, price: &Price, ms: i64) -> Option<(Quantities, Amounts)> {
    // Below 2^63 ms times below 2^64 units: every quantity fits 128 bits.
    let ms = u128::from(ms.unsigned_abs());
    let quantities = Quantities {
        cpu_milli_vcpu_ms: u128::from(resources.cpu.0) * ms,
        memory_mib_ms: u128::from(resources.memory.0) * ms,
        gpu_ms: u128::from(resources.gpu) * ms,
    };
    let amount = |quantity: u128, unit_price: u64, per: u64| {
        let exact = quantity.checked_mul(u128::from(unit_price))?;
        u64::try_from(round_half_up(exact, per)).ok()
    };
    let cpu = amount(quantities.cpu_milli_vcpu_ms, price.cpu_micros_per_vcpu_second, 1000 * 1000)?;
    let memory = amount(quantities.memory_mib_ms, price.memory_micros_per_gib_second, 1024 * 1000)?;
    let gpu = amount(quantities.gpu_ms, price.gpu_micros_per_gpu_second, 1000)?;
    let total = cpu.checked_add(memory)?.checked_add(gpu)?;
    let amounts =
        Amounts { cpu: Micros(cpu), memory: Micros(memory), gpu: Micros(gpu), total: Micros(total) };
    Some((quantities, amounts))
}

/// `n / d` to the nearest integer, halves up. Every `d` here is even, so "half" is exact.
fn round_half_up(n: u128, d: u64) -> u128 {
    // Nearly every real product fits 64 bits, where dividing is several times cheaper.
    match u64::try_from(n) {
        Ok(n) => u128::from(n / d + u64::from(n % d >= d / 2)),
        Err(_) => n / u128::from(d) + u128::from(n % u128::from(d) >= u128::from(d / 2)),
    }
}

/// The charges of one instance inside `window`, as of `now_ms`. For many instances, a [`Rater`]
/// works out each kind of instance's prices once.
pub fn rate<'c>(
    instance: &MeteredInstance,
    catalogue: &'c Catalogue,
    metering: &Metering,
    window: Window,
    now_ms: i64,
) -> Result<Vec<Charge<'c>>, RatingError> {
    let mut charges = Vec::new();
    Rater::new(catalogue, metering, window, now_ms).rate(instance, |c| charges.push(c))?;
    Ok(charges)
}

#[cfg(test)]
mod tests {
    use eci_core::{MiB, MilliCpu};
    use proptest::prelude::*;

    use super::*;
    use crate::catalogue::PriceTier;
    use crate::testing::*;

    fn window(from_ms: i64, to_ms: i64) -> Window {
        Window::new(from_ms, to_ms).unwrap()
    }

    fn a_day_around(ms: i64) -> Window {
        window(ms - DAY_MS, ms + DAY_MS)
    }

    /// (day of month, price id, ms, top-up ms, cpu, memory, gpu, total micros).
    type Summary = (u32, String, i64, i64, u64, u64, u64, u64);

    fn summary(charges: &[Charge<'_>]) -> Vec<Summary> {
        use chrono::Datelike;
        charges
            .iter()
            .map(|c| {
                let a = c.amounts;
                (c.day.day(), c.price.id.clone(), c.ms, c.top_up_ms, a.cpu.0, a.memory.0, a.gpu.0, a.total.0)
            })
            .collect()
    }

    fn catalogue_33_7() -> Catalogue {
        Catalogue::new(vec![flat_price("c-1", 0, 33, 7, 0)]).unwrap()
    }

    #[test]
    fn ninety_point_two_seconds_of_2_vcpu_and_4_gib_are_billed_as_91_seconds() {
        let start = at(1, 10, 0, 0, 0);
        let i = instance("i-1", 2000, 4096, 0, Some(start), Some(start + 90_200));
        let catalogue = catalogue_33_7();
        let charges = rate(&i, &catalogue, &Metering::default(), a_day_around(start), start).unwrap();
        // cpu 2000 m * 91 000 ms * 33 / 10^6 = 6006; memory 4096 MiB * 91 000 ms * 7 / 1 024 000 = 2548.
        assert_eq!(summary(&charges), [(1, "c-1".into(), 91_000, 800, 6006, 2548, 0, 8554)]);
        assert_eq!(charges[0].quantities.cpu_milli_vcpu_ms, 2000 * 91_000);
        assert_eq!(charges[0].quantities.memory_mib_ms, 4096 * 91_000);
    }

    #[test]
    fn ten_seconds_are_billed_as_the_one_minute_minimum() {
        let start = at(1, 10, 0, 0, 0);
        let i = instance("i-1", 1000, 1024, 0, Some(start), Some(start + 10_000));
        let catalogue = catalogue_33_7();
        let charges = rate(&i, &catalogue, &Metering::default(), a_day_around(start), start).unwrap();
        assert_eq!(summary(&charges), [(1, "c-1".into(), 60_000, 50_000, 1980, 420, 0, 2400)]);
        let no_minimum = Metering::default().with_min_charge_ms(0);
        let charges = rate(&i, &catalogue, &no_minimum, a_day_around(start), start).unwrap();
        assert_eq!(summary(&charges), [(1, "c-1".into(), 10_000, 0, 330, 70, 0, 400)]);
    }

    #[test]
    fn an_instance_is_cut_at_price_changes_and_at_midnight() {
        let guangdong_telecom = PriceTier {
            region: Some("south-china".into()),
            province: Some("guangdong".into()),
            city: None,
            carrier: Some(Carrier::Telecom),
        };
        let catalogue = Catalogue::new(vec![
            flat_price("c-v1", 0, 10, 4, 1000),
            flat_price("c-v2", at(1, 23, 30, 0, 0), 12, 5, 1200),
            Price { tier: guangdong_telecom, ..flat_price("c-gd-telecom", at(2, 1, 0, 0, 0), 9, 3, 900) },
        ])
        .unwrap();
        let i = instance("i-1", 500, 1536, 1, Some(at(1, 23, 0, 0, 0)), Some(at(2, 1, 30, 0, 250)));
        let charges =
            rate(&i, &catalogue, &Metering::default(), window(at(1, 0, 0, 0, 0), at(3, 0, 0, 0, 0)), 0)
                .unwrap();
        assert_eq!(
            summary(&charges),
            [
                // 30 min of 0.5 vCPU, 1.5 GiB, 1 GPU at 10 / 4 / 1000.
                (1, "c-v1".into(), 1_800_000, 0, 9_000, 10_800, 1_800_000, 1_819_800),
                (1, "c-v2".into(), 1_800_000, 0, 10_800, 13_500, 2_160_000, 2_184_300),
                (2, "c-v2".into(), 3_600_000, 0, 21_600, 27_000, 4_320_000, 4_368_600),
                // 30 min 0.25 s run + 0.75 s top-up: cpu and memory are both 8104.5, rounded up.
                (2, "c-gd-telecom".into(), 1_801_000, 750, 8_105, 8_105, 1_620_900, 1_637_110),
            ]
        );
        let total: u64 = charges.iter().map(|c| c.amounts.total.0).sum();
        assert_eq!(total, 10_009_810);
        assert_eq!(charges.iter().map(|c| c.ms).sum::<i64>(), Metering::default().billed_ms(9_000_250));
    }

    #[test]
    fn a_live_instance_costs_what_it_would_if_it_ended_now() {
        let start = at(1, 10, 0, 0, 0);
        let live = instance("i-1", 1000, 1024, 0, Some(start), None);
        let catalogue = catalogue_33_7();
        let so_far =
            |now| summary(&rate(&live, &catalogue, &Metering::default(), a_day_around(start), now).unwrap());
        assert_eq!(so_far(start + 120_500), [(1, "c-1".into(), 121_000, 500, 3993, 847, 0, 4840)]);
        assert_eq!(so_far(start + 30_000), [(1, "c-1".into(), 60_000, 30_000, 1980, 420, 0, 2400)]);
        // A `now` a little before the start, from a replica whose clock is behind: just started.
        assert_eq!(so_far(start - 5), [(1, "c-1".into(), 60_000, 60_000, 1980, 420, 0, 2400)]);
    }

    #[test]
    fn the_top_up_counts_only_in_the_window_that_holds_the_end() {
        let start = at(1, 10, 0, 0, 0);
        let i = instance("i-1", 1000, 1024, 0, Some(start), Some(start + 30_000));
        let catalogue = catalogue_33_7();
        let ms_in = |from, to| {
            let charges = rate(&i, &catalogue, &Metering::default(), window(from, to), 0).unwrap();
            charges.iter().map(|c| (c.ms, c.top_up_ms)).collect::<Vec<_>>()
        };
        let (before, split, end, after) =
            (start - 3_600_000, start + 15_000, start + 30_000, start + 3_600_000);
        assert_eq!(ms_in(before, split), [(15_000, 0)]);
        assert_eq!(ms_in(split, after), [(45_000, 30_000)]);
        assert_eq!(ms_in(before, end), [(30_000, 0)]);
        assert_eq!(ms_in(end, after), [(30_000, 30_000)]);
        assert_eq!(ms_in(after, after + 1), []);
    }

    #[test]
    fn an_end_at_midnight_puts_the_top_up_on_the_next_day() {
        let i = instance("i-1", 1000, 1024, 0, Some(at(1, 23, 59, 50, 0)), Some(at(2, 0, 0, 0, 0)));
        let catalogue = catalogue_33_7();
        let charges =
            rate(&i, &catalogue, &Metering::default(), window(at(1, 0, 0, 0, 0), at(3, 0, 0, 0, 0)), 0)
                .unwrap();
        assert_eq!(
            summary(&charges),
            [
                (1, "c-1".into(), 10_000, 0, 330, 70, 0, 400),
                (2, "c-1".into(), 50_000, 50_000, 1650, 350, 0, 2000)
            ]
        );
    }

    #[test]
    fn an_end_as_the_price_changes_puts_the_top_up_under_the_new_price() {
        let start = at(1, 10, 0, 0, 0);
        let catalogue = Catalogue::new(vec![
            flat_price("old", 0, 33, 7, 0),
            flat_price("new", start + 20_000, 66, 14, 0),
        ])
        .unwrap();
        let i = instance("i-1", 1000, 1024, 0, Some(start), Some(start + 20_000));
        let charges = rate(&i, &catalogue, &Metering::default(), a_day_around(start), 0).unwrap();
        assert_eq!(
            summary(&charges),
            [
                (1, "old".into(), 20_000, 0, 660, 140, 0, 800),
                (1, "new".into(), 40_000, 40_000, 2640, 560, 0, 3200)
            ]
        );
    }

    #[test]
    fn amounts_round_to_the_nearest_micro_unit_with_halves_up() {
        let price = flat_price("p", 0, 1, 1, 1);
        let cpu_micros = |milli_vcpu| {
            charge(&Resources::new(MilliCpu(milli_vcpu), MiB(0), 0), &price, 1000).unwrap().1.cpu.0
        };
        assert_eq!([499, 500, 1499, 1500, 2500, 2501].map(cpu_micros), [0, 1, 1, 2, 3, 3]);
        // 512 MiB for a second is half a GiB-second: half a micro-unit, up to one.
        let memory = charge(&Resources::new(MilliCpu(0), MiB(512), 0), &price, 1000).unwrap().1;
        assert_eq!(memory.memory, Micros(1));
        let gpu = charge(&Resources::new(MilliCpu(0), MiB(0), 1), &price, 500).unwrap().1;
        assert_eq!(gpu.gpu, Micros(1));
    }

    #[test]
    fn an_amount_too_large_for_64_bits_is_refused_not_wrapped() {
        let catalogue = Catalogue::new(vec![flat_price("dear", 0, u64::MAX, 0, 0)]).unwrap();
        let i = instance("i-1", 1000, 0, 0, Some(0), Some(1000));
        assert_eq!(
            rate(&i, &catalogue, &Metering::default(), a_day_around(0), 0),
            Err(RatingError::AmountOverflow { instance: InstanceId("i-1".into()) })
        );
    }

    #[test]
    fn an_unpriced_instance_is_an_error_that_names_it() {
        let start = at(1, 10, 0, 0, 0);
        let catalogue = Catalogue::new(vec![flat_price("c-1", start + 5_000, 33, 7, 0)]).unwrap();
        let mut vm = instance("i-vm", 1000, 1024, 0, Some(start + 10_000), Some(start + 100_000));
        vm.runtime = Runtime::Vm;
        let err = rate(&vm, &catalogue, &Metering::default(), a_day_around(start), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no price applies to instance `i-vm` (vm in south-china/guangdong/shenzhen on telecom) \
             at 2026-11-01T10:00:10.000Z"
        );
        // Started before the first price took effect: unpriced from its start...
        let early = instance("i-early", 1000, 1024, 0, Some(start), Some(start + 100_000));
        let err = rate(&early, &catalogue, &Metering::default(), a_day_around(start), 0).unwrap_err();
        assert!(matches!(err, RatingError::Unpriced { at_ms, .. } if at_ms == start), "{err}");
        // ...which a window after that moment does not see.
        assert!(
            rate(&early, &catalogue, &Metering::default(), window(start + 5_000, start + DAY_MS), 0).is_ok()
        );
    }

    #[test]
    fn an_instance_that_never_ran_costs_nothing_and_one_that_ends_before_it_starts_is_refused() {
        let catalogue = catalogue_33_7();
        let never = instance("i-1", 1000, 1024, 0, None, Some(at(1, 10, 0, 0, 0)));
        assert_eq!(
            rate(&never, &catalogue, &Metering::default(), a_day_around(at(1, 0, 0, 0, 0)), 0),
            Ok(vec![])
        );
        let backwards = instance("i-2", 1000, 1024, 0, Some(at(1, 10, 0, 0, 0)), Some(at(1, 9, 0, 0, 0)));
        let err = rate(&backwards, &catalogue, &Metering::default(), a_day_around(at(1, 0, 0, 0, 0)), 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance `i-2` ends at 2026-11-01T09:00:00.000Z before it starts at 2026-11-01T10:00:00.000Z"
        );
        let ancient = instance("i-3", 1000, 1024, 0, Some(i64::MIN), None);
        assert!(matches!(
            rate(&ancient, &catalogue, &Metering::default(), a_day_around(0), 0),
            Err(RatingError::OutOfCalendar { ms: i64::MIN, .. })
        ));
    }

    /// Per dimension and in ms, what `instance` costs in `[from, to)`.
    fn cost(
        instance: &MeteredInstance,
        catalogue: &Catalogue,
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<[i128; 4], RatingError> {
        let charges = rate(instance, catalogue, &Metering::default(), window(from, to), now)?;
        let mut sum = [0i128; 4];
        for c in &charges {
            sum[0] += i128::from(c.ms);
            sum[1] += i128::from(c.amounts.cpu.0);
            sum[2] += i128::from(c.amounts.memory.0);
            sum[3] += i128::from(c.amounts.gpu.0);
        }
        Ok(sum)
    }

    proptest! {
        #[test]
        fn splitting_a_window_moves_each_dimension_by_at_most_one_micro_unit_per_instance(
            catalogue in a_catalogue(),
            instances in some_instances(),
            (a, b, c) in three_moments(),
            now in a_now(),
        ) {
            for i in &instances {
                let whole = cost(i, &catalogue, a, c, now);
                let parts = cost(i, &catalogue, a, b, now).and_then(|l| Ok((l, cost(i, &catalogue, b, c, now)?)));
                let (whole, (left, right)) = match (whole, parts) {
                    (Ok(whole), Ok(parts)) => (whole, parts),
                    (whole, parts) => {
                        prop_assert_eq!(whole.is_err(), parts.is_err());
                        continue;
                    }
                };
                // Billed time is never rounded: it splits exactly.
                prop_assert_eq!(whole[0], left[0] + right[0]);
                let at_midnight = b.rem_euclid(DAY_MS) == 0;
                for d in 1..4 {
                    let drift = whole[d] - (left[d] + right[d]);
                    prop_assert!(drift.abs() <= 1, "dimension {} drifts by {}", d, drift);
                    if at_midnight {
                        prop_assert_eq!(drift, 0, "a midnight cuts no piece");
                    }
                }
            }
        }

        #[test]
        fn a_window_around_a_whole_life_bills_exactly_the_billed_time(
            catalogue in a_catalogue(),
            instances in some_instances(),
            now in a_now(),
        ) {
            let everything = window(-DAY_MS, HORIZON_MS + 5 * DAY_MS);
            for i in &instances {
                let Ok(charges) = rate(i, &catalogue, &Metering::default(), everything, now) else { continue };
                let Some(start) = i.started_ms else {
                    prop_assert!(charges.is_empty());
                    continue;
                };
                let end = i.ended_ms.unwrap_or(now.max(start));
                prop_assert_eq!(charges.iter().map(|c| c.ms).sum::<i64>(), Metering::default().billed_ms(end - start));
                prop_assert!(charges.iter().all(|c| c.ms > 0));
                prop_assert!(charges.windows(2).all(|w| w[0].day <= w[1].day));
                prop_assert_eq!(charges.iter().filter(|c| c.top_up_ms > 0).count(), usize::from(end - start < 60_000 || (end - start) % 1000 != 0));
            }
        }
    }
}
