//! [`SimClock`]: where a cluster's metrics read the time, so that a test can set the moment load curves
//! are evaluated at instead of waiting for it.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of "now": the system clock, or whatever a test injects. A closure rather than a trait, so
/// that any clock (the platform's `ManualClock` among them) plugs in without an adapter type.
#[derive(Clone)]
pub struct SimClock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl SimClock {
    /// The wall clock.
    pub fn system() -> SimClock {
        SimClock(Arc::new(Utc::now))
    }

    /// A clock that reads `now` each time it is asked.
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> SimClock {
        SimClock(Arc::new(now))
    }

    /// The current moment by this clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::system()
    }
}

impl fmt::Debug for SimClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimClock").field(&self.now()).finish()
    }
}
