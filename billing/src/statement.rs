//! What a tenant's invoice says: whether it is still a draft, its lines as kept once the invoice is
//! final, and the adjustment lines that carry a correction of a final invoice onto a later one.
//!
//! A month's invoice is a draft until the month and a grace period after it are over, and final from
//! then on ([`InvoiceState::settle`]): the grace period lets ends that were late to arrive (an IDC
//! that reconnects on the 1st) land on the month they belong to rather than as an adjustment.
//!
//! A final invoice is never rewritten. When an instance's record changes after its month's invoice is
//! final (an IDC reconnects and reports the true end of an instance that was billed as running), the
//! month is rated again; what it now comes to, less what was billed for it (its own lines and the
//! adjustments already made on later invoices), becomes adjustment lines on the next invoice. The
//! amounts are signed: a correction is usually a credit.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use eci_core::Runtime;
use eci_core::words::Word;
use serde::{Deserialize, Serialize};

use crate::invoice::{InvoiceLine, Period};

/// Whether a line bills a month's usage or corrects an earlier, final month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Bills the usage of the invoice's own month.
    Usage,
    /// Corrects an earlier month whose invoice is final, since a final invoice is never rewritten.
    Adjustment,
}

impl LineKind {
    /// The word the API and CSV use, as serde spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Usage => "usage",
            LineKind::Adjustment => "adjustment",
        }
    }
}

impl Word for LineKind {
    const KIND: &'static str = "invoice line kind";
    const ALL: &'static [LineKind] = &[LineKind::Usage, LineKind::Adjustment];
    fn as_str(&self) -> &'static str {
        LineKind::as_str(*self)
    }
}

/// Whether an invoice can still change, which is what tells a customer its figures are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    /// The month or its grace period is not over: the figures are as of now.
    Draft,
    /// Written once, never rewritten; later corrections go onto a later invoice.
    Final,
}

impl InvoiceState {
    /// The word the API uses, as serde spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceState::Draft => "draft",
            InvoiceState::Final => "final",
        }
    }

    /// The state at `now_ms` of `period`'s invoice, `self` until then, when a draft takes corrections
    /// for `grace_ms` after its month: a draft turns final once the month and its grace period are
    /// over, and a final invoice stays final whatever the clock says, because it was written once and
    /// a replica whose clock lags must not reopen it.
    pub fn settle(self, period: Period, grace_ms: i64, now_ms: i64) -> InvoiceState {
        let due = period.window().to_ms().saturating_add(grace_ms) <= now_ms;
        match self {
            InvoiceState::Draft if due => InvoiceState::Final,
            InvoiceState::Draft => InvoiceState::Draft,
            InvoiceState::Final => InvoiceState::Final,
        }
    }
}

impl Word for InvoiceState {
    const KIND: &'static str = "invoice state";
    const ALL: &'static [InvoiceState] = &[InvoiceState::Draft, InvoiceState::Final];
    fn as_str(&self) -> &'static str {
        InvoiceState::as_str(*self)
    }
}

/// One line of an invoice, with signed quantities and amounts (an adjustment may take back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementLine {
    /// Whether the line bills its month or corrects it.
    pub kind: LineKind,
    /// The month whose usage the line bills or corrects, `2026-11`.
    pub period: Period,
    /// The price's runtime, which with its tier tells the customer what the line is for.
    pub runtime: Runtime,
    /// The price's tier as printed, `south-china/guangdong/*/telecom`.
    pub tier: String,
    /// The price charged, by the id the catalogue gives it.
    pub price_id: String,
    /// The unit prices as charged, kept so that a final invoice reads the same once its prices are
    /// superseded.
    pub cpu_micros_per_vcpu_second: u64,
    /// The memory unit price as charged.
    pub memory_micros_per_gib_second: u64,
    /// The GPU unit price as charged.
    pub gpu_micros_per_gpu_second: u64,
    /// Billed time; signed, like every figure below, so that an adjustment can take back.
    pub billed_ms: i64,
    /// The CPU billed, in milli-vCPU-milliseconds.
    pub cpu_milli_vcpu_ms: i128,
    /// The memory billed, in MiB-milliseconds.
    pub memory_mib_ms: i128,
    /// The GPUs billed, in GPU-milliseconds.
    pub gpu_ms: i128,
    /// What the CPU costs.
    pub cpu_micros: i64,
    /// What the memory costs.
    pub memory_micros: i64,
    /// What the GPUs cost.
    pub gpu_micros: i64,
    /// What the line costs in all, the figure invoice totals add up.
    pub amount_micros: i64,
}

/// The figures of a line that adjustments compare and take differences of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Figures {
    billed_ms: i64,
    cpu_milli_vcpu_ms: i128,
    memory_mib_ms: i128,
    gpu_ms: i128,
    cpu_micros: i64,
    memory_micros: i64,
    gpu_micros: i64,
    amount_micros: i64,
}

impl Figures {
    fn of(line: &StatementLine) -> Figures {
        Figures {
            billed_ms: line.billed_ms,
            cpu_milli_vcpu_ms: line.cpu_milli_vcpu_ms,
            memory_mib_ms: line.memory_mib_ms,
            gpu_ms: line.gpu_ms,
            cpu_micros: line.cpu_micros,
            memory_micros: line.memory_micros,
            gpu_micros: line.gpu_micros,
            amount_micros: line.amount_micros,
        }
    }

    fn plus(self, o: Figures, sign: i64) -> Figures {
        Figures {
            billed_ms: self.billed_ms + sign * o.billed_ms,
            cpu_milli_vcpu_ms: self.cpu_milli_vcpu_ms + i128::from(sign) * o.cpu_milli_vcpu_ms,
            memory_mib_ms: self.memory_mib_ms + i128::from(sign) * o.memory_mib_ms,
            gpu_ms: self.gpu_ms + i128::from(sign) * o.gpu_ms,
            cpu_micros: self.cpu_micros + sign * o.cpu_micros,
            memory_micros: self.memory_micros + sign * o.memory_micros,
            gpu_micros: self.gpu_micros + sign * o.gpu_micros,
            amount_micros: self.amount_micros + sign * o.amount_micros,
        }
    }
}

/// Amounts of one month fit an i64 of micro-units by far (9.2 trillion currency units); quantities
/// are kept in i128 like the rating's u128.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StatementLine {
    /// The usage line of `period` for one invoice line.
    pub fn usage(period: Period, line: &InvoiceLine) -> StatementLine {
        let (q, a) = (&line.totals.quantities, &line.totals.amounts);
        StatementLine {
            kind: LineKind::Usage,
            period,
            runtime: line.runtime,
            tier: line.tier.clone(),
            price_id: line.price_id.clone(),
            cpu_micros_per_vcpu_second: line.cpu_micros_per_vcpu_second,
            memory_micros_per_gib_second: line.memory_micros_per_gib_second,
            gpu_micros_per_gpu_second: line.gpu_micros_per_gpu_second,
            billed_ms: line.totals.billed_ms,
            cpu_milli_vcpu_ms: i128::try_from(q.cpu_milli_vcpu_ms).unwrap_or(i128::MAX),
            memory_mib_ms: i128::try_from(q.memory_mib_ms).unwrap_or(i128::MAX),
            gpu_ms: i128::try_from(q.gpu_ms).unwrap_or(i128::MAX),
            cpu_micros: signed(a.cpu.0),
            memory_micros: signed(a.memory.0),
            gpu_micros: signed(a.gpu.0),
            amount_micros: signed(a.total.0),
        }
    }

    fn with(&self, kind: LineKind, f: Figures) -> StatementLine {
        StatementLine {
            kind,
            billed_ms: f.billed_ms,
            cpu_milli_vcpu_ms: f.cpu_milli_vcpu_ms,
            memory_mib_ms: f.memory_mib_ms,
            gpu_ms: f.gpu_ms,
            cpu_micros: f.cpu_micros,
            memory_micros: f.memory_micros,
            gpu_micros: f.gpu_micros,
            amount_micros: f.amount_micros,
            ..self.clone()
        }
    }
}

/// The adjustment lines that bring what was billed for `period` (`billed`: its final invoice's usage
/// lines and every adjustment of it since) to what its usage comes to now (`now`, its usage lines
/// rated again), one per price whose figures differ.
pub fn adjustments(period: Period, now: &[StatementLine], billed: &[StatementLine]) -> Vec<StatementLine> {
    let mut by_price: BTreeMap<&str, (&StatementLine, Figures)> = BTreeMap::new();
    for line in now.iter().filter(|l| l.period == period) {
        let entry = by_price.entry(&line.price_id).or_insert((line, Figures::default()));
        entry.1 = entry.1.plus(Figures::of(line), 1);
    }
    for line in billed.iter().filter(|l| l.period == period) {
        let entry = by_price.entry(&line.price_id).or_insert((line, Figures::default()));
        entry.1 = entry.1.plus(Figures::of(line), -1);
    }
    by_price
        .into_values()
        .filter(|(_, difference)| *difference != Figures::default())
        .map(|(line, difference)| line.with(LineKind::Adjustment, difference))
        .collect()
}

/// An invoice's total: the exact sum of its lines.
pub fn total_micros(lines: &[StatementLine]) -> i64 {
    lines.iter().map(|l| l.amount_micros).sum()
}

/// An invoice's lines as CSV (RFC 4180: a header row, CRLF line ends, a field quoted when it holds a
/// comma, a quote or a line break). Numbers are plain integers in the smallest units; the tiers and
/// price ids the platform writes are plain words, which never need quoting.
pub fn statement_csv(lines: &[StatementLine]) -> String {
    let mut csv = String::from(
        "kind,period,runtime,tier,price_id,\
         cpu_micros_per_vcpu_second,memory_micros_per_gib_second,gpu_micros_per_gpu_second,\
         billed_ms,cpu_milli_vcpu_ms,memory_mib_ms,gpu_ms,\
         cpu_micros,memory_micros,gpu_micros,amount_micros\r\n",
    );
    for l in lines {
        write!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            l.kind.as_str(),
            l.period,
            l.runtime,
            quoted(&l.tier),
            quoted(&l.price_id),
            l.cpu_micros_per_vcpu_second,
            l.memory_micros_per_gib_second,
            l.gpu_micros_per_gpu_second,
            l.billed_ms,
            l.cpu_milli_vcpu_ms,
            l.memory_mib_ms,
            l.gpu_ms,
            l.cpu_micros,
            l.memory_micros,
            l.gpu_micros,
            l.amount_micros,
        )
        .expect("writing into a String cannot fail");
    }
    csv
}

fn quoted(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\"")).into()
    } else {
        field.into()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::meter::DAY_MS;

    fn line(kind: LineKind, period: &str, price: &str, ms: i64, amount: i64) -> StatementLine {
        StatementLine {
            kind,
            period: period.parse().unwrap(),
            runtime: Runtime::Container,
            tier: "*/*/*/*".into(),
            price_id: price.into(),
            cpu_micros_per_vcpu_second: 40,
            memory_micros_per_gib_second: 5,
            gpu_micros_per_gpu_second: 0,
            billed_ms: ms,
            cpu_milli_vcpu_ms: i128::from(ms) * 1000,
            memory_mib_ms: 0,
            gpu_ms: 0,
            cpu_micros: amount,
            memory_micros: 0,
            gpu_micros: 0,
            amount_micros: amount,
        }
    }

    #[test]
    fn a_correction_is_adjusted_once_and_an_unchanged_month_not_at_all() {
        let nov: Period = "2026-11".parse().unwrap();
        let billed = vec![line(LineKind::Usage, "2026-11", "base", 10_000, 400)];
        assert!(
            adjustments(nov, &[line(LineKind::Usage, "2026-11", "base", 10_000, 400)], &billed).is_empty()
        );

        // The month now comes to less (an instance ended earlier than billed) and a price it no
        // longer pays disappears entirely.
        let mut billed = billed;
        billed.push(line(LineKind::Usage, "2026-11", "promo", 2_000, 80));
        let now = vec![line(LineKind::Usage, "2026-11", "base", 7_000, 280)];
        let made = adjustments(nov, &now, &billed);
        assert_eq!(made.len(), 2);
        assert!(made.iter().all(|l| l.kind == LineKind::Adjustment && l.period == nov));
        assert_eq!(total_micros(&made), -200);
        assert_eq!(
            (made[0].price_id.as_str(), made[0].billed_ms, made[0].amount_micros),
            ("base", -3_000, -120)
        );

        // Once those adjustments are billed, asking again adjusts nothing.
        billed.extend(made);
        assert!(adjustments(nov, &now, &billed).is_empty());
        // Lines of other months are not this month's business.
        assert!(
            adjustments(
                nov,
                &now,
                &[billed.clone(), vec![line(LineKind::Usage, "2026-12", "base", 1, 1)]].concat()
            )
            .is_empty()
        );
    }

    #[test]
    fn lines_survive_being_kept_as_json_and_print_as_csv() {
        let lines = vec![
            line(LineKind::Usage, "2026-11", "base", 61_000, 2_440),
            line(LineKind::Adjustment, "2026-10", "base", -1_000, -40),
        ];
        let kept: Vec<StatementLine> = serde_json::from_str(&serde_json::to_string(&lines).unwrap()).unwrap();
        assert_eq!(kept, lines);
        let csv = statement_csv(&lines);
        let rows: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(rows.len(), 4, "header, two lines, and the empty rest after the last CRLF");
        assert_eq!(
            rows[2],
            "adjustment,2026-10,container,*/*/*/*,base,40,5,0,-1000,-1000000,0,0,-40,0,0,-40"
        );
        assert_eq!(total_micros(&lines), 2_400);
    }

    #[test]
    fn a_csv_field_that_needs_quotes_gets_them() {
        assert_eq!(quoted("plain"), "plain");
        assert_eq!(quoted("a,b"), "\"a,b\"");
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn a_draft_turns_final_when_its_month_and_grace_period_are_over_and_stays_final() {
        let nov: Period = "2026-11".parse().unwrap();
        let grace = 3 * DAY_MS;
        let december = nov.window().to_ms();
        assert_eq!(InvoiceState::Draft.settle(nov, grace, nov.window().from_ms()), InvoiceState::Draft);
        assert_eq!(InvoiceState::Draft.settle(nov, grace, december + grace - 1), InvoiceState::Draft);
        assert_eq!(InvoiceState::Draft.settle(nov, grace, december + grace), InvoiceState::Final);
        assert_eq!(InvoiceState::Draft.settle(nov, 0, december), InvoiceState::Final);
        assert_eq!(InvoiceState::Final.settle(nov, grace, nov.window().from_ms()), InvoiceState::Final);
        assert_eq!(InvoiceState::Draft.settle(nov, i64::MAX, i64::MAX - 1), InvoiceState::Draft);
        assert_eq!((InvoiceState::Draft.as_str(), InvoiceState::Final.as_str()), ("draft", "final"));
        assert_eq!(serde_json::to_string(&InvoiceState::Final).unwrap(), "\"final\"");
    }

    fn spelled_as_serde_spells_it<W: Word + Serialize>() {
        for w in W::ALL {
            assert_eq!(serde_json::to_string(w).unwrap(), format!("\"{}\"", w.as_str()), "a {}", W::KIND);
        }
    }

    #[test]
    fn invoice_words_are_listed_in_order_and_spelled_as_the_json_spells_them() {
        spelled_as_serde_spells_it::<LineKind>();
        spelled_as_serde_spells_it::<InvoiceState>();
        assert_eq!(
            <LineKind as Word>::ALL.iter().map(Word::as_str).collect::<Vec<_>>(),
            ["usage", "adjustment"]
        );
        assert_eq!(
            <InvoiceState as Word>::ALL.iter().map(Word::as_str).collect::<Vec<_>>(),
            ["draft", "final"]
        );
        for kind in <LineKind as Word>::ALL {
            assert_eq!(serde_json::from_str::<LineKind>(&format!("\"{}\"", kind.as_str())).unwrap(), *kind);
        }
    }

    fn a_period() -> impl Strategy<Value = Period> {
        (1i32..=9999, 1u32..=12).prop_map(|(year, month)| Period::new(year, month).unwrap())
    }

    fn a_state() -> impl Strategy<Value = InvoiceState> {
        prop_oneof![Just(InvoiceState::Draft), Just(InvoiceState::Final)]
    }

    proptest! {
        #[test]
        fn an_invoice_is_final_exactly_from_the_end_of_its_grace_period_and_never_reopens(
            period in a_period(),
            state in a_state(),
            grace in prop_oneof![Just(0i64), 0i64..40 * DAY_MS],
            now in -40 * DAY_MS..80 * DAY_MS,
            later in 0i64..80 * DAY_MS,
        ) {
            let now = period.window().from_ms() + now;
            let settled = state.settle(period, grace, now);
            let due = now >= period.window().to_ms() + grace;
            prop_assert_eq!(settled == InvoiceState::Final, due || state == InvoiceState::Final);
            prop_assert_eq!(settled.settle(period, grace, now), settled);
            if InvoiceState::Draft.settle(period, grace, now) == InvoiceState::Final {
                prop_assert_eq!(InvoiceState::Draft.settle(period, grace, now + later), InvoiceState::Final);
            }
        }
    }
}
