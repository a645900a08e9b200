//! What is metered: an instance's running time, billed per second with a minimum charge, and the
//! window of time a question about usage is asked for.
//!
//! An instance is metered from the moment it is `running` (`started_ms`) until it ends (`ended_ms`:
//! terminated or failed). One that has not ended is metered up to "now", and what it has cost so far
//! is what it would cost if it ended now, minimum charge included. Times are UTC milliseconds.

use std::collections::BTreeMap;

use eci_core::{Area, BatchId, Carrier, InstanceId, Resources, Runtime};

/// Milliseconds in a UTC day; days start at 00:00 UTC whatever the customer's time zone.
pub const DAY_MS: i64 = 86_400_000;

/// What billing needs to know about one instance, and nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredInstance {
    /// Which instance it is, for its own cost and for naming it when it cannot be rated.
    pub id: InstanceId,
    /// Usage can be grouped by batch: a batch task's cost is what its customer asks first.
    pub batch: BatchId,
    /// Prices differ by runtime.
    pub runtime: Runtime,
    /// Prices differ by area tier, and usage can be grouped by area.
    pub area: Area,
    /// The carrier the instance is reached through; prices may differ per carrier.
    pub carrier: Carrier,
    /// What the instance holds, which is what it pays for every second it runs.
    pub resources: Resources,
    /// The batch's labels, for usage grouped by a label (a team, a project, a cost centre).
    pub labels: BTreeMap<String, String>,
    /// When the instance became `running`; `None` if it never did, and then it costs nothing.
    pub started_ms: Option<i64>,
    /// When it was terminated or failed; `None` while it is live.
    pub ended_ms: Option<i64>,
}

/// How running time turns into billed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metering {
    /// The least an instance that ran at all is billed for: starting one has a cost of its own.
    pub min_charge_ms: i64,
}

impl Default for Metering {
    fn default() -> Self {
        Metering { min_charge_ms: 60_000 }
    }
}

impl Metering {
    /// The same metering with another minimum charge, which each deployment sets for itself.
    pub fn with_min_charge_ms(self, min_charge_ms: i64) -> Self {
        Metering { min_charge_ms }
    }

    /// [`billed_ms`] under this metering.
    pub fn billed_ms(&self, actual_ms: i64) -> i64 {
        billed_ms(actual_ms, self.min_charge_ms)
    }
}

/// What `actual_ms` of running time is billed as: rounded up to whole seconds, and at least
/// `min_charge_ms`. A negative duration counts as none. Durations are at most the span of the
/// calendar a [`Window`] lies in, far from overflowing.
pub fn billed_ms(actual_ms: i64, min_charge_ms: i64) -> i64 {
    let whole_seconds = (actual_ms.max(0) + 999) / 1000;
    (whole_seconds * 1000).max(min_charge_ms)
}

/// The half-open span `[from_ms, to_ms)` usage is asked for, inside the calendar (years 1 to 9999)
/// so that every moment in it is a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    from_ms: i64,
    to_ms: i64,
}

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A window that ends before it starts holds no moment: the ends were surely swapped.
    #[error("the window ends ({to_ms} ms) before it starts ({from_ms} ms)")]
    Reversed {
        /// Where the window was to start.
        from_ms: i64,
        /// Where it was to end.
        to_ms: i64,
    },
    /// A moment outside the years 1 to 9999 has no date, and rating cuts time at dates.
    #[error("{0} ms is outside the years 1 to 9999")]
    OutOfCalendar(i64),
}

impl Window {
    /// 0001-01-01T00:00:00Z.
    pub const EARLIEST_MS: i64 = -62_135_596_800_000;
    /// 10000-01-01T00:00:00Z, the first moment after the calendar.
    pub const LATEST_MS: i64 = 253_402_300_800_000;

    /// The window from `from_ms` to `to_ms`, refused when reversed or outside the calendar, so that
    /// rating never meets a moment without a date.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Window, WindowError> {
        for ms in [from_ms, to_ms] {
            if !Window::in_calendar(ms) {
                return Err(WindowError::OutOfCalendar(ms));
            }
        }
        if to_ms < from_ms {
            return Err(WindowError::Reversed { from_ms, to_ms });
        }
        Ok(Window { from_ms, to_ms })
    }

    /// Where the window starts, included: the first moment charged.
    pub fn from_ms(&self) -> i64 {
        self.from_ms
    }

    /// Where the window ends, excluded, so that adjacent windows share no moment.
    pub fn to_ms(&self) -> i64 {
        self.to_ms
    }

    /// Whether `ms` lies in the window, by the one half-open rule every reader uses.
    pub fn contains(&self, ms: i64) -> bool {
        self.from_ms <= ms && ms < self.to_ms
    }

    /// True when `ms` may be an end of a window: from the first moment of the calendar to the first
    /// moment after it.
    pub fn in_calendar(ms: i64) -> bool {
        (Window::EARLIEST_MS..=Window::LATEST_MS).contains(&ms)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn running_time_is_billed_in_whole_seconds_with_a_minimum() {
        assert_eq!(billed_ms(90_200, 60_000), 91_000);
        assert_eq!(billed_ms(90_000, 60_000), 90_000);
        assert_eq!(billed_ms(10_000, 60_000), 60_000);
        assert_eq!(billed_ms(0, 60_000), 60_000);
        assert_eq!(billed_ms(-5, 60_000), 60_000);
        assert_eq!(billed_ms(1, 0), 1_000);
        assert_eq!(billed_ms(0, 0), 0);
        assert_eq!(Metering::default().billed_ms(59_001), 60_000);
        assert_eq!(Metering::default().with_min_charge_ms(0).billed_ms(59_001), 60_000);
        assert_eq!(Metering::default().with_min_charge_ms(0).billed_ms(1_001), 2_000);
    }

    #[test]
    fn the_calendar_bounds_are_the_first_and_last_dates_chrono_writes_with_four_digits() {
        let first = NaiveDate::from_ymd_opt(1, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        let after = NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        assert_eq!(first.and_utc().timestamp_millis(), Window::EARLIEST_MS);
        assert_eq!(after.and_utc().timestamp_millis(), Window::LATEST_MS);
        assert!(DateTime::from_timestamp_millis(Window::LATEST_MS).is_some());
    }

    #[test]
    fn a_window_is_ordered_and_inside_the_calendar() {
        assert!(Window::new(5, 5).is_ok());
        assert_eq!(Window::new(6, 5), Err(WindowError::Reversed { from_ms: 6, to_ms: 5 }));
        assert_eq!(Window::new(0, i64::MAX), Err(WindowError::OutOfCalendar(i64::MAX)));
        let w = Window::new(10, 20).unwrap();
        assert!(w.contains(10) && w.contains(19) && !w.contains(20) && !w.contains(9));
    }

    proptest! {
        #[test]
        fn billed_time_covers_running_time_by_less_than_a_second_unless_it_is_the_minimum(
            actual in 0i64..10_000_000_000_000,
            min in prop_oneof![Just(0i64), Just(60_000i64), 0i64..10_000_000],
        ) {
            let billed = billed_ms(actual, min);
            prop_assert!(billed >= actual);
            prop_assert!(billed >= min);
            prop_assert!(billed % 1000 == 0 || billed == min, "{}", billed);
            if billed > min {
                prop_assert!(billed < actual + 1000);
            }
        }
    }
}
