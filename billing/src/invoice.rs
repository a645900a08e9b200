//! Invoices: a month's charges added up per price, as lines a customer can check against the
//! catalogue (unit prices times exact quantities), and the month ([`Period`]) an invoice covers.
//! An invoice keeps and prints its lines as [`StatementLine`](crate::statement::StatementLine)s.
//!
//! A line is an exact sum of charges, so the lines of a period add up to its usage total to the
//! micro-unit, and a period is made of whole UTC days, so it adds up to its days' usage exactly too.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate};
use eci_core::Runtime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::catalogue::Catalogue;
use crate::meter::{MeteredInstance, Metering, Window};
use crate::rating::{Rater, RatingError, Totals};

/// What the instances of a period consumed under one price, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// The price's runtime, which with its tier tells the customer what the line is for.
    pub runtime: Runtime,
    /// The price's tier as printed, `south-china/guangdong/*/telecom`.
    pub tier: String,
    /// The price charged, by the id the catalogue gives it, so that it can be looked up.
    pub price_id: String,
    /// When that version took effect: lines of one tier are listed in the order their prices applied.
    pub effective_from_ms: i64,
    /// The price's unit prices, copied so that the line can be checked without the catalogue.
    pub cpu_micros_per_vcpu_second: u64,
    /// The memory unit price, for the same check.
    pub memory_micros_per_gib_second: u64,
    /// The GPU unit price, for the same check.
    pub gpu_micros_per_gpu_second: u64,
    /// What was charged under the price: an exact sum of charges.
    pub totals: Totals,
}

impl InvoiceLine {
    /// How lines are listed: by runtime, tier, effective moment, then price id (unique).
    fn order(&self) -> (Runtime, &str, i64, &str) {
        (self.runtime, &self.tier, self.effective_from_ms, &self.price_id)
    }
}

/// The invoice lines of `instances` in `window` (usually a [`Period`]'s) as of `now_ms`: one per
/// price that was charged, sorted by runtime, tier, effective moment and price id.
pub fn invoice_lines<'i>(
    instances: impl IntoIterator<Item = &'i MeteredInstance>,
    catalogue: &Catalogue,
    metering: &Metering,
    window: Window,
    now_ms: i64,
) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut rater = Rater::new(catalogue, metering, window, now_ms);
    // Indexed like the catalogue's prices, so adding a charge to its line is one array access.
    let mut by_price: Vec<Option<Totals>> = vec![None; catalogue.prices().len()];
    for instance in instances {
        rater.pieces(instance, |piece| {
            let line = by_price[piece.price].get_or_insert_default();
            line.add_parts(piece.ms, &piece.quantities, &piece.amounts)
        })?;
    }
    let mut lines: Vec<InvoiceLine> = catalogue
        .prices()
        .iter()
        .zip(by_price)
        .filter_map(|(price, totals)| {
            Some(InvoiceLine {
                runtime: price.runtime,
                tier: price.tier.to_string(),
                price_id: price.id.clone(),
                effective_from_ms: price.effective_from_ms,
                cpu_micros_per_vcpu_second: price.cpu_micros_per_vcpu_second,
                memory_micros_per_gib_second: price.memory_micros_per_gib_second,
                gpu_micros_per_gpu_second: price.gpu_micros_per_gpu_second,
                totals: totals?,
            })
        })
        .collect();
    lines.sort_by(|a, b| a.order().cmp(&b.order()));
    Ok(lines)
}

/// A calendar month in UTC, the period an invoice covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

/// Why a period could not be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// A period is written `YYYY-MM` and nothing else, so that one month has one spelling and periods
    /// sort as text.
    #[error("`{0}` is not a month; expected YYYY-MM, as in 2026-11")]
    Malformed(String),
    /// A month outside the calendar has no window to bill.
    #[error("{year}-{month:02} is not a month of the years 1 to 9999")]
    OutOfRange {
        /// The year asked for.
        year: i32,
        /// The month asked for.
        month: u32,
    },
}

impl Period {
    /// A month from its numbers, refused outside the years 1 to 9999 so that its window is dates.
    pub fn new(year: i32, month: u32) -> Result<Period, PeriodError> {
        if (1..=9999).contains(&year) && (1..=12).contains(&month) {
            Ok(Period { year, month })
        } else {
            Err(PeriodError::OutOfRange { year, month })
        }
    }

    /// The year, for callers that lay months out by year.
    pub fn year(&self) -> i32 {
        self.year
    }

    /// The month of the year, 1 to 12, for the same callers.
    pub fn month(&self) -> u32 {
        self.month
    }

    /// The month `ms` lies in; `None` outside the years 1 to 9999.
    pub fn containing(ms: i64) -> Option<Period> {
        if !(Window::EARLIEST_MS..Window::LATEST_MS).contains(&ms) {
            return None;
        }
        let date = DateTime::from_timestamp_millis(ms)?.date_naive();
        Some(Period { year: date.year(), month: date.month() })
    }

    /// The month after this one; `None` after 9999-12.
    pub fn next(&self) -> Option<Period> {
        let (year, month) = self.following();
        Period::new(year, month).ok()
    }

    /// The year and month after this one, year 10000 included: it is where 9999-12 ends.
    fn following(&self) -> (i32, u32) {
        if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) }
    }

    /// From 00:00 UTC on the first of the month to 00:00 UTC on the first of the next.
    pub fn window(&self) -> Window {
        let first = |year, month| {
            NaiveDate::from_ymd_opt(year, month, 1)
                .expect("the first of a month of the years 1 to 10000 is a date")
                .and_hms_opt(0, 0, 0)
                .expect("midnight is a time")
                .and_utc()
                .timestamp_millis()
        };
        let (next_year, next_month) = self.following();
        Window::new(first(self.year, self.month), first(next_year, next_month))
            .expect("a month of the years 1 to 9999 lies inside the calendar")
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Period, PeriodError> {
        let malformed = || PeriodError::Malformed(s.to_owned());
        let (year, month) = s.split_once('-').ok_or_else(malformed)?;
        let digits = |part: &str, len| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return Err(malformed());
        }
        Period::new(year.parse().map_err(|_| malformed())?, month.parse().map_err(|_| malformed())?)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Kept as its text, `2026-11`, so that a line kept with a final invoice reads as it prints.
impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Period, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use eci_core::Carrier;
    use proptest::prelude::*;

    use super::*;
    use crate::catalogue::{Price, PriceTier};
    use crate::meter::DAY_MS;
    use crate::statement::{StatementLine, statement_csv};
    use crate::testing::*;
    use crate::usage::usage;

    #[test]
    fn a_period_reads_prints_and_spans_a_utc_month() {
        let november: Period = "2026-11".parse().unwrap();
        assert_eq!((november.year(), november.month()), (2026, 11));
        assert_eq!(november.to_string(), "2026-11");
        let w = november.window();
        assert_eq!((w.from_ms(), w.to_ms()), (at(1, 0, 0, 0, 0), at(1, 0, 0, 0, 0) + 30 * DAY_MS));
        assert_eq!(Period::containing(at(30, 23, 59, 59, 999)), Some(november));
        assert_eq!(Period::containing(w.to_ms()), november.next());
        let december = november.next().unwrap();
        assert_eq!(december.next().unwrap().to_string(), "2027-01");
        assert_eq!(december.window().to_ms() - december.window().from_ms(), 31 * DAY_MS);
        assert_eq!(Period::new(9999, 12).unwrap().next(), None);
        assert_eq!(Period::new(9999, 12).unwrap().window().to_ms(), Window::LATEST_MS);
        assert_eq!(Period::containing(Window::LATEST_MS), None);
        assert_eq!(
            Period::containing(Window::EARLIEST_MS).map(|p| p.to_string()).as_deref(),
            Some("0001-01")
        );
        for bad in ["2026-13", "0000-01"] {
            assert!(matches!(bad.parse::<Period>(), Err(PeriodError::OutOfRange { .. })), "{bad}");
        }
        for bad in ["2026-1", "26-11", "2026/11", "2026-11-01", "", "+026-11", "2026-+1"] {
            assert_eq!(bad.parse::<Period>(), Err(PeriodError::Malformed(bad.into())), "{bad}");
        }
        assert_eq!(
            "2026-13".parse::<Period>().unwrap_err().to_string(),
            "2026-13 is not a month of the years 1 to 9999"
        );
    }

    #[test]
    fn a_period_is_kept_as_its_text_and_only_a_month_reads_back() {
        let november = Period::new(2026, 11).unwrap();
        assert_eq!(serde_json::to_string(&november).unwrap(), "\"2026-11\"");
        assert_eq!(serde_json::from_str::<Period>("\"2026-11\"").unwrap(), november);
        assert!(serde_json::from_str::<Period>("\"2026-13\"").is_err());
        assert!(serde_json::from_str::<Period>("202611").is_err());
    }

    fn november_catalogue() -> Catalogue {
        let guangdong_telecom = PriceTier {
            region: Some("south-china".into()),
            province: Some("guangdong".into()),
            city: None,
            carrier: Some(Carrier::Telecom),
        };
        Catalogue::new(vec![
            Price { tier: guangdong_telecom, ..flat_price("c-gd-telecom", at(2, 1, 0, 0, 0), 9, 3, 900) },
            flat_price("c-v2", at(1, 23, 30, 0, 0), 12, 5, 1200),
            flat_price("c-v1", 0, 10, 4, 1000),
        ])
        .unwrap()
    }

    #[test]
    fn a_month_adds_up_per_price_into_lines_and_csv() {
        let catalogue = november_catalogue();
        let instances = [
            instance("i-1", 500, 1536, 1, Some(at(1, 23, 0, 0, 0)), Some(at(2, 1, 30, 0, 250))),
            instance("i-2", 1000, 1024, 0, Some(at(3, 8, 0, 0, 0)), Some(at(3, 8, 0, 10, 0))),
            instance("i-3", 1000, 1024, 0, None, None),
        ];
        let november: Period = "2026-11".parse().unwrap();
        let lines =
            invoice_lines(&instances, &catalogue, &Metering::default(), november.window(), 0).unwrap();
        let summary: Vec<_> = lines
            .iter()
            .map(|l| (l.price_id.as_str(), l.totals.billed_ms, l.totals.amounts.total.0))
            .collect();
        // i-1 as in the rating example; i-2 is the one-minute minimum under c-gd-telecom: 540 + 180.
        assert_eq!(
            summary,
            [
                ("c-v1", 1_800_000, 1_819_800),
                ("c-v2", 5_400_000, 2_184_300 + 4_368_600),
                ("c-gd-telecom", 1_801_000 + 60_000, 1_637_110 + 720)
            ]
        );
        let kept: Vec<StatementLine> =
            lines.iter().map(|line| StatementLine::usage(november, line)).collect();
        assert_eq!(
            statement_csv(&kept),
            "kind,period,runtime,tier,price_id,\
             cpu_micros_per_vcpu_second,memory_micros_per_gib_second,gpu_micros_per_gpu_second,\
             billed_ms,cpu_milli_vcpu_ms,memory_mib_ms,gpu_ms,cpu_micros,memory_micros,gpu_micros,amount_micros\r\n\
             usage,2026-11,container,*/*/*/*,c-v1,10,4,1000,1800000,900000000,2764800000,1800000,9000,10800,1800000,1819800\r\n\
             usage,2026-11,container,*/*/*/*,c-v2,12,5,1200,5400000,2700000000,8294400000,5400000,32400,40500,6480000,6552900\r\n\
             usage,2026-11,container,south-china/guangdong/*/telecom,c-gd-telecom,9,3,900,\
             1861000,960500000,2827776000,1801000,8645,8285,1620900,1637830\r\n"
        );
        let october = Period::new(2026, 10).unwrap();
        assert_eq!(
            invoice_lines(&instances, &catalogue, &Metering::default(), october.window(), 0),
            Ok(vec![])
        );
    }

    proptest! {
        #[test]
        fn invoice_lines_add_up_to_the_usage_total(
            catalogue in a_catalogue(),
            instances in some_instances(),
            (from, _, to) in three_moments(),
            now in a_now(),
        ) {
            let window = Window::new(from, to).unwrap();
            let lines = invoice_lines(&instances, &catalogue, &Metering::default(), window, now);
            let usage = usage(&instances, &catalogue, &Metering::default(), window, now, None);
            let (Ok(lines), Ok(usage)) = (&lines, &usage) else {
                prop_assert_eq!(lines.is_err(), usage.is_err());
                return Ok(());
            };
            let mut sum = Totals::default();
            for line in lines {
                sum.merge(&line.totals).unwrap();
            }
            prop_assert_eq!(sum, usage.total);
            let period = Period::containing(from).unwrap();
            let kept: Vec<StatementLine> = lines.iter().map(|line| StatementLine::usage(period, line)).collect();
            let csv = statement_csv(&kept);
            prop_assert_eq!(csv.matches("\r\n").count(), lines.len() + 1);
        }

        #[test]
        fn a_month_is_the_exact_sum_of_its_days(
            catalogue in a_catalogue(),
            instances in some_instances(),
            now in a_now(),
        ) {
            let month = Window::new(0, 6 * DAY_MS).unwrap();
            let Ok(whole) = usage(&instances, &catalogue, &Metering::default(), month, now, None) else {
                return Ok(());
            };
            let mut days = Totals::default();
            for d in 0..6 {
                let day = Window::new(d * DAY_MS, (d + 1) * DAY_MS).unwrap();
                days.merge(&usage(&instances, &catalogue, &Metering::default(), day, now, None).unwrap().total).unwrap();
            }
            prop_assert_eq!(days, whole.total);
        }
    }
}
