//! Billing: what an instance's running time costs, in integer micro-units of currency.
//!
//! Instances are billed per second, from `running` to their end, with a minimum charge; prices come
//! from a versioned catalogue by runtime and by area/carrier tier. Everything is an integer, and each
//! amount is rounded exactly once (the rule is in [`rating`]), so every total is an exact sum and
//! totals add up across any grouping.
//!
//! - [`catalogue`]: prices, tiers, which price applies when, and price timelines.
//! - [`meter`]: what is metered (instances, billed time, the minimum charge) and the window asked for.
//! - [`rating`]: an instance's metered time cut into charges by day and price; the rounding rule.
//! - [`usage`](mod@usage): charges added up overall and per batch, label, area, carrier, runtime or day.
//! - [`invoice`]: a month's charges added up per price, and the month an invoice covers.
//! - [`statement`]: when a draft invoice becomes final, invoice lines as kept once final (and as
//!   CSV), and adjustments of final invoices.
//!
//! Architecture invariant: like `eci-core`, this crate does no I/O and no async, and uses no
//! floating point anywhere: plain functions over plain data.

#![warn(missing_docs)]

pub mod catalogue;
pub mod invoice;
pub mod meter;
pub mod rating;
pub mod statement;
pub mod usage;

#[cfg(test)]
mod testing;

pub use catalogue::{Catalogue, CatalogueError, Price, PriceTier, Timeline};
pub use invoice::{InvoiceLine, Period, PeriodError, invoice_lines};
pub use meter::{DAY_MS, MeteredInstance, Metering, Window, WindowError, billed_ms};
pub use rating::{Amounts, Charge, Micros, Quantities, Rater, RatingError, Totals, rate};
pub use statement::{InvoiceState, LineKind, StatementLine, adjustments, statement_csv, total_micros};
pub use usage::{GroupBy, GroupByError, Usage, UsageGroup, usage};
