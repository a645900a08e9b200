//! Time windows: a group books `desired` instances from one moment to another, both 5-field cron
//! expressions read on the wall clock of an IANA time zone, optionally grown `lead_seconds` early so
//! that the instances already run when the window opens.
//!
//! The cron expressions name wall-clock moments, and each wall-clock moment happens exactly once: a
//! moment that does not exist on a day the clocks jump forward (02:30 in New York on the second
//! Sunday of March) happens when the jump ends (03:00), and one that happens twice when they go back
//! (01:30 on the first Sunday of November) happens the first time. So a window opens and closes once
//! per occurrence whatever daylight saving does, and never in the middle of its own hour.
//!
//! A window is active from its start (less its lead) until the first end after that start; windows
//! that overlap give the highest `desired`.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The longest lead a window may have: a day.
pub const MAX_LEAD_SECONDS: u32 = 86_400;

/// Why a window cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is not five fields (minute, hour, day of month, month, day of week).
    #[error("`{expression}` must have 5 fields (minute hour day-of-month month day-of-week), not {fields}")]
    NotFiveFields {
        /// The expression as given.
        expression: String,
        /// How many fields it has.
        fields: usize,
    },
    /// A field is not valid cron.
    #[error("`{expression}` is not a cron expression: {why}")]
    InvalidCron {
        /// The expression as given.
        expression: String,
        /// The parser's word.
        why: String,
    },
    /// The expression names no moment that ever comes (such as 30 February).
    #[error("`{0}` never happens")]
    NeverHappens(String),
    /// The time zone is not in the IANA database.
    #[error("`{0}` is not an IANA time zone (such as Asia/Shanghai)")]
    UnknownTimezone(String),
    /// The lead is longer than a day.
    #[error("lead_seconds must be at most {MAX_LEAD_SECONDS}, not {0}")]
    LeadTooLong(u32),
}

/// A parsed 5-field cron expression, read on a wall clock.
#[derive(Debug, Clone)]
struct WallClock {
    text: String,
    schedule: cron::Schedule,
}

impl WallClock {
    fn parse(expression: &str) -> Result<WallClock, ScheduleError> {
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::NotFiveFields { expression: expression.to_string(), fields });
        }
        // The parser wants seconds first; a window's moments are whole minutes.
        let schedule = cron::Schedule::from_str(&format!("0 {expression}")).map_err(|e| {
            ScheduleError::InvalidCron { expression: expression.to_string(), why: e.to_string() }
        })?;
        let clock = WallClock { text: expression.to_string(), schedule };
        let epoch = NaiveDateTime::default();
        if clock.next_after(epoch).is_none() {
            return Err(ScheduleError::NeverHappens(expression.to_string()));
        }
        Ok(clock)
    }

    /// The first wall-clock occurrence strictly after `wall`. The schedule runs over UTC only as a
    /// calendar without daylight saving: every wall-clock minute exists exactly once there.
    fn next_after(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        self.schedule.after(&Utc.from_utc_datetime(&wall)).next().map(|t| t.naive_utc())
    }

    /// The last wall-clock occurrence at or before `wall`.
    fn last_until(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        // `after` excludes its start, so start a second later to include `wall` itself.
        let from = Utc.from_utc_datetime(&(wall + Duration::seconds(1)));
        self.schedule.after(&from).next_back().map(|t| t.naive_utc())
    }
}

/// When a wall-clock moment of `tz` happens: the first time when it happens twice, the end of the
/// jump when it falls in one.
fn happens_at(tz: &Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = wall;
    // Jumps are at most a few hours; a day bounds the search whatever the zone's history.
    for _ in 0..(24 * 60) {
        if let Some(at) = tz.from_local_datetime(&probe).earliest() {
            return if probe == wall { at.with_timezone(&Utc) } else { jump_end(tz, at.with_timezone(&Utc)) };
        }
        probe += Duration::minutes(1);
    }
    Utc.from_utc_datetime(&wall)
}

/// The first instant of the wall clock after a jump, found back from `after` (the first whole
/// minute past it): the moment the skipped wall-clock time hands over to the new offset.
fn jump_end(tz: &Tz, after: DateTime<Utc>) -> DateTime<Utc> {
    let offset = |t: DateTime<Utc>| t.with_timezone(tz).naive_local() - t.naive_utc();
    let mut at = after;
    while offset(at - Duration::minutes(1)) == offset(after) {
        at -= Duration::minutes(1);
    }
    at
}

/// The wall-clock time of `tz` at `at`.
fn wall(tz: &Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(tz).naive_local()
}

/// A booked window of a group.
#[derive(Debug, Clone)]
pub struct Window {
    start: WallClock,
    end: WallClock,
    timezone: Tz,
    /// How many instances the window books.
    pub desired: u32,
    /// How long before its start the window begins to grow the group.
    pub lead: Duration,
}

/// One occurrence of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    /// When the group starts growing for it: its start less the lead.
    pub opens_at: DateTime<Utc>,
    /// Its start.
    pub starts_at: DateTime<Utc>,
    /// The first end after its start: when it stops booking.
    pub ends_at: DateTime<Utc>,
}

impl Window {
    /// A window from its description; the expressions and zone are checked here.
    pub fn new(
        start: &str,
        end: &str,
        timezone: &str,
        desired: u32,
        lead_seconds: u32,
    ) -> Result<Window, ScheduleError> {
        let timezone: Tz =
            timezone.parse().map_err(|_| ScheduleError::UnknownTimezone(timezone.to_string()))?;
        if lead_seconds > MAX_LEAD_SECONDS {
            return Err(ScheduleError::LeadTooLong(lead_seconds));
        }
        Ok(Window {
            start: WallClock::parse(start)?,
            end: WallClock::parse(end)?,
            timezone,
            desired,
            lead: Duration::seconds(i64::from(lead_seconds)),
        })
    }

    /// The start expression as given.
    pub fn start_expression(&self) -> &str {
        &self.start.text
    }

    /// The end expression as given.
    pub fn end_expression(&self) -> &str {
        &self.end.text
    }

    /// The time zone's name.
    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The occurrence whose start happens last at or before `at` (counting the lead), if any.
    fn latest_started(&self, at: DateTime<Utc>) -> Option<Occurrence> {
        let tz = &self.timezone;
        let horizon = at + self.lead;
        let start_wall = self.start.last_until(wall(tz, horizon))?;
        let starts_at = happens_at(tz, start_wall);
        // Moments happen in wall-clock order, so the first end after the start's wall-clock time
        // that happens after the start is the window's end.
        let mut end_wall = self.end.next_after(start_wall)?;
        let mut ends_at = happens_at(tz, end_wall);
        while ends_at <= starts_at {
            end_wall = self.end.next_after(end_wall)?;
            ends_at = happens_at(tz, end_wall);
        }
        Some(Occurrence { opens_at: starts_at - self.lead, starts_at, ends_at })
    }

    /// The occurrence that books instances at `at`, if any.
    pub fn active_at(&self, at: DateTime<Utc>) -> Option<Occurrence> {
        self.latest_started(at).filter(|o| o.opens_at <= at && at < o.ends_at)
    }

    /// The next moment after `at` when this window opens (at its start less its lead) or closes.
    pub fn next_boundary_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(open) = self.active_at(at) {
            return Some(open.ends_at);
        }
        let tz = &self.timezone;
        let mut start_wall = wall(tz, at + self.lead);
        loop {
            start_wall = self.start.next_after(start_wall)?;
            let opens_at = happens_at(tz, start_wall) - self.lead;
            if opens_at > at {
                return Some(opens_at);
            }
        }
    }
}

/// A group's windows.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// In the order the group lists them; the first of equal `desired` is the one reported.
    pub windows: Vec<Window>,
}

/// What the windows book at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booking {
    /// The index of the window that books the most.
    pub window: usize,
    /// How many it books.
    pub desired: u32,
    /// Its occurrence.
    pub occurrence: Occurrence,
}

impl Schedule {
    /// The window booking the most instances at `at`, if any is active.
    pub fn booking_at(&self, at: DateTime<Utc>) -> Option<Booking> {
        let mut best: Option<Booking> = None;
        for (index, window) in self.windows.iter().enumerate() {
            if let Some(occurrence) = window.active_at(at)
                && best.is_none_or(|b| window.desired > b.desired)
            {
                best = Some(Booking { window: index, desired: window.desired, occurrence });
            }
        }
        best
    }

    /// The next moment after `at` when any window opens or closes: when the scaler must look again,
    /// whatever its tick.
    pub fn next_boundary_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.windows.iter().filter_map(|w| w.next_boundary_after(at)).min()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    fn evening() -> Window {
        Window::new("0 20 * * *", "0 23 * * *", "Asia/Shanghai", 1000, 600).unwrap()
    }

    #[test]
    fn a_window_books_from_its_lead_to_its_exact_end() {
        let w = evening();
        // 20:00 in Shanghai is 12:00 UTC; the lead opens it ten minutes early.
        assert_eq!(w.active_at(utc("2030-01-01T11:49:59Z")), None);
        let open = w.active_at(utc("2030-01-01T11:50:00Z")).expect("open at start minus lead");
        assert_eq!(open.starts_at, utc("2030-01-01T12:00:00Z"));
        assert_eq!(open.ends_at, utc("2030-01-01T15:00:00Z"));
        assert!(w.active_at(utc("2030-01-01T14:59:59.999Z")).is_some());
        assert_eq!(w.active_at(utc("2030-01-01T15:00:00Z")), None, "not a moment past its end");
        assert_eq!(w.next_boundary_after(utc("2030-01-01T15:00:00Z")), Some(utc("2030-01-02T11:50:00Z")));
        assert_eq!(w.next_boundary_after(utc("2030-01-01T12:30:00Z")), Some(utc("2030-01-01T15:00:00Z")));
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let w = Window::new("0 22 * * *", "0 2 * * *", "Asia/Shanghai", 50, 0).unwrap();
        // 22:00-02:00 Shanghai = 14:00-18:00 UTC.
        let open = w.active_at(utc("2030-01-01T17:59:00Z")).expect("still open after midnight");
        assert_eq!(
            (open.starts_at, open.ends_at),
            (utc("2030-01-01T14:00:00Z"), utc("2030-01-01T18:00:00Z"))
        );
        assert_eq!(w.active_at(utc("2030-01-01T18:00:00Z")), None);
        assert_eq!(w.active_at(utc("2030-01-01T13:59:00Z")), None);
    }

    #[test]
    fn overlapping_windows_give_the_highest() {
        let schedule = Schedule {
            windows: vec![
                Window::new("0 20 * * *", "0 23 * * *", "Asia/Shanghai", 1000, 0).unwrap(),
                Window::new("0 21 * * *", "30 21 * * *", "Asia/Shanghai", 1500, 0).unwrap(),
                Window::new("0 19 * * *", "0 22 * * *", "Asia/Shanghai", 200, 0).unwrap(),
            ],
        };
        let at = |t: &str| schedule.booking_at(utc(t)).map(|b| (b.window, b.desired));
        assert_eq!(at("2030-01-01T11:30:00Z"), Some((2, 200)));
        assert_eq!(at("2030-01-01T12:30:00Z"), Some((0, 1000)));
        assert_eq!(at("2030-01-01T13:15:00Z"), Some((1, 1500)));
        assert_eq!(at("2030-01-01T14:30:00Z"), Some((0, 1000)));
        assert_eq!(at("2030-01-01T15:00:00Z"), None);
        assert_eq!(
            schedule.next_boundary_after(utc("2030-01-01T13:00:00Z")),
            Some(utc("2030-01-01T13:30:00Z"))
        );
    }

    #[test]
    fn a_start_in_the_spring_jump_happens_when_the_jump_ends() {
        // New York, 10 March 2030: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
        let w = Window::new("30 2 * * *", "0 4 * * *", "America/New_York", 10, 0).unwrap();
        let open = w.active_at(utc("2030-03-10T07:00:00Z")).expect("opens when the jump ends");
        assert_eq!(open.starts_at, utc("2030-03-10T07:00:00Z"));
        assert_eq!(open.ends_at, utc("2030-03-10T08:00:00Z"), "04:00 EDT");
        assert_eq!(w.active_at(utc("2030-03-10T06:59:59Z")), None);
        // The day before and after, 02:30 exists.
        assert_eq!(w.active_at(utc("2030-03-09T07:30:00Z")).unwrap().starts_at, utc("2030-03-09T07:30:00Z"));
        assert_eq!(w.active_at(utc("2030-03-11T06:30:00Z")).unwrap().starts_at, utc("2030-03-11T06:30:00Z"));
    }

    #[test]
    fn a_moment_of_the_autumn_repeat_happens_the_first_time() {
        // New York, 3 November 2030: 01:00-02:00 EDT, then 01:00-02:00 EST again (05:00-07:00 UTC).
        let w = Window::new("30 1 * * *", "45 1 * * *", "America/New_York", 10, 0).unwrap();
        let open = w.active_at(utc("2030-11-03T05:40:00Z")).expect("the first 01:30");
        assert_eq!(
            (open.starts_at, open.ends_at),
            (utc("2030-11-03T05:30:00Z"), utc("2030-11-03T05:45:00Z"))
        );
        assert_eq!(w.active_at(utc("2030-11-03T06:40:00Z")), None, "not again an hour later");
        // A window over the repeat lasts its real length: 00:30 EDT to 02:30 EST is three hours.
        let long = Window::new("30 0 * * *", "30 2 * * *", "America/New_York", 10, 0).unwrap();
        let open = long.active_at(utc("2030-11-03T06:30:00Z")).unwrap();
        assert_eq!(open.ends_at - open.starts_at, Duration::hours(3));
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let bad =
            |start: &str, tz: &str, lead: u32| Window::new(start, "0 23 * * *", tz, 1, lead).unwrap_err();
        assert!(matches!(bad("0 20 * *", "UTC", 0), ScheduleError::NotFiveFields { fields: 4, .. }));
        assert!(matches!(bad("0 0 20 * * *", "UTC", 0), ScheduleError::NotFiveFields { fields: 6, .. }));
        assert!(matches!(bad("61 20 * * *", "UTC", 0), ScheduleError::InvalidCron { .. }));
        assert!(matches!(bad("0 0 30 2 *", "UTC", 0), ScheduleError::NeverHappens(_)));
        assert!(matches!(bad("0 20 * * *", "Asia/Beijing", 0), ScheduleError::UnknownTimezone(_)));
        assert!(matches!(bad("0 20 * * *", "UTC", 86_401), ScheduleError::LeadTooLong(86_401)));
        assert_eq!(
            bad("0 20 * *", "UTC", 0).to_string(),
            "`0 20 * *` must have 5 fields (minute hour day-of-month month day-of-week), not 4"
        );
    }

    fn a_zone() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "Asia/Shanghai",
            "America/New_York",
            "Europe/London",
            "Australia/Lord_Howe",
            "UTC",
        ])
    }

    proptest! {
        #[test]
        fn a_window_is_active_exactly_between_its_boundaries(
            start_hour in 0u32..24, start_minute in 0u32..60, end_hour in 0u32..24, end_minute in 0u32..60,
            zone in a_zone(), lead in 0u32..7200, from in 0i64..(2 * 365 * 86_400), steps in prop::collection::vec(1i64..20_000, 1..40),
        ) {
            let w = Window::new(
                &format!("{start_minute} {start_hour} * * *"),
                &format!("{end_minute} {end_hour} * * *"),
                zone, 7, lead,
            ).unwrap();
            let mut at = utc("2030-01-01T00:00:00Z") + Duration::seconds(from);
            for step in steps {
                let active = w.active_at(at);
                if let Some(o) = active {
                    prop_assert!(o.opens_at <= at && at < o.ends_at);
                    prop_assert!(o.ends_at - o.starts_at <= Duration::hours(26), "{o:?}");
                }
                let next = w.next_boundary_after(at).expect("daily windows always have a next boundary");
                prop_assert!(next > at);
                // Nothing changes before the next boundary; something does at it.
                let just_before = next - Duration::milliseconds(1);
                prop_assert_eq!(w.active_at(just_before).is_some(), active.is_some(), "{} -> {}", at, next);
                prop_assert_ne!(w.active_at(next).map(|o| o.starts_at), active.map(|o| o.starts_at), "{} -> {}", at, next);
                at += Duration::seconds(step);
            }
        }
    }
}
