//! What an autoscaled group should number, decided without I/O.
//!
//! - [`schedule`]: time windows (`start` / `end` cron expressions in an IANA time zone, a `desired`
//!   count, an optional lead), which one is active at a moment and when the next boundary comes.
//! - [`load`]: the load recommendation, as the Kubernetes HPA computes it: the replica calculation
//!   with tolerance and missing or fresh metrics, then the scale-up and scale-down behaviour
//!   (stabilisation windows and rate policies).
//! - [`decision`]: a group's desired count at a tick, `clamp(max(window, load), min, max)`, and why.
//! - [`group`]: a group as its tenant describes it (template, placement, policy) and its status.
//! - [`tick`]: one tick of one group: the decision over its instances, and what to do (grow,
//!   remove which instances, hold), keeping away from IDCs where it keeps failing.
//!
//! Architecture invariant: like core and billing, this crate does no I/O, no async, and knows
//! nothing of HTTP, SQL or Kubernetes; time is always passed in.

#![warn(missing_docs)]

pub mod decision;
pub mod group;
pub mod load;
pub mod schedule;
pub mod tick;
