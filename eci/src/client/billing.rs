//! `eci usage` and `eci invoice list|get`: what the tenant's instances cost, live and by month;
//! and [`cost_view`], the cost of one batch's or group's instances (`eci group cost`).
//! Amounts come from the API in integer micro-units and are shown as currency with six decimals,
//! converted with integer arithmetic so that nothing is rounded on the way.

use anyhow::Result;
use serde::Deserialize;

use super::http::{Api, Query};
use super::render::{finish, key_values, table, when};
use super::{OutputFormat, render};

/// What `eci usage` asks for.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Start of the window (RFC 3339); default the start of this month (UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window (RFC 3339, exclusive); default now.
    #[arg(long)]
    pub to: Option<String>,
    /// Group by `batch`, `label:<key>`, `area`, `carrier`, `runtime` or `day`.
    #[arg(long, value_name = "BY")]
    pub group_by: Option<String>,
}

/// The `invoice` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum InvoiceCommand {
    /// Every month's invoice: period, draft or final, total.
    List,
    /// One month's invoice with its lines.
    Get {
        /// The month, `YYYY-MM`.
        period: String,
        /// Print the lines as CSV instead.
        #[arg(long)]
        csv: bool,
    },
}

/// Micro-units as currency: `-1.500000`.
pub fn money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// Milliseconds as whole hours, minutes and seconds (`3h 05m 09.250s`).
fn duration(ms: i64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    format!("{h}h {m:02}m {:02}.{:03}s", rest / 1000, rest % 1000)
}

/// What a set of charges comes to, as `/v1/usage` and the cost endpoints shape it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Totals {
    billed_ms: i64,
    cpu_micros: i64,
    memory_micros: i64,
    gpu_micros: i64,
    total_micros: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Group {
    key: String,
    instances: u64,
    totals: Totals,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Usage {
    from: Option<String>,
    to: Option<String>,
    as_of: Option<String>,
    instances: u64,
    total: Totals,
    groups: Vec<Group>,
}

fn usage_view(u: &Usage) -> String {
    let summary = key_values(&[
        ("From", when(u.from.as_deref())),
        ("To", when(u.to.as_deref())),
        ("As of", when(u.as_of.as_deref())),
        ("Instances", u.instances.to_string()),
        ("Billed", duration(u.total.billed_ms)),
        ("Cost", money(u.total.total_micros)),
    ]);
    if u.groups.is_empty() {
        return summary;
    }
    let mut t = table(&["GROUP", "INSTANCES", "BILLED", "COST"], &[1, 2, 3]);
    for g in &u.groups {
        let key = if g.key.is_empty() { "(none)".to_string() } else { g.key.clone() };
        t.add_row([key, g.instances.to_string(), duration(g.totals.billed_ms), money(g.totals.total_micros)]);
    }
    format!("{summary}\n\n{}", finish(&t))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Line {
    kind: String,
    period: String,
    runtime: String,
    tier: String,
    price_id: String,
    billed_ms: i64,
    amount_micros: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Invoice {
    period: String,
    state: String,
    as_of: Option<String>,
    total_micros: i64,
    lines: Vec<Line>,
}

fn invoices_table(invoices: &[Invoice]) -> String {
    if invoices.is_empty() {
        return "No invoices found.".to_string();
    }
    let mut t = table(&["PERIOD", "STATE", "TOTAL", "AS OF"], &[2]);
    for i in invoices {
        t.add_row([i.period.clone(), i.state.clone(), money(i.total_micros), when(i.as_of.as_deref())]);
    }
    finish(&t)
}

fn invoice_view(i: &Invoice) -> String {
    let summary = key_values(&[
        ("Period", i.period.clone()),
        ("State", i.state.clone()),
        ("As of", when(i.as_of.as_deref())),
        ("Total", money(i.total_micros)),
    ]);
    let mut t = table(&["KIND", "FOR", "RUNTIME", "TIER", "PRICE", "BILLED", "AMOUNT"], &[5, 6]);
    for l in &i.lines {
        t.add_row([
            l.kind.clone(),
            l.period.clone(),
            l.runtime.clone(),
            l.tier.clone(),
            l.price_id.clone(),
            duration(l.billed_ms),
            money(l.amount_micros),
        ]);
    }
    format!("{summary}\n\n{}", finish(&t))
}

/// What a batch's or a group's instances have cost so far (`GET /v1/batches/{id}/cost`,
/// `GET /v1/groups/{id}/cost`): in all, and one by one when asked for with `instances=true`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Cost {
    batch_id: Option<String>,
    group_id: Option<String>,
    as_of: Option<String>,
    total: Totals,
    /// Present only when the instances were asked for; empty when there were none.
    instances: Option<Vec<InstanceCost>>,
}

/// What one instance has cost so far.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InstanceCost {
    instance_id: String,
    started_at: Option<String>,
    ended_at: Option<String>,
    totals: Totals,
}

/// The view of a cost answer: whose it is, the billed time and the amounts by resource (GPUs only
/// when they cost something), then each instance's share if the answer lists them.
pub(super) fn cost_view(c: &Cost) -> String {
    let owner = match (&c.group_id, &c.batch_id) {
        (Some(group), _) => ("Group", group.clone()),
        (None, batch) => ("Batch", render::dash(batch.as_deref())),
    };
    let mut rows = vec![
        owner,
        ("As of", when(c.as_of.as_deref())),
        ("Billed", duration(c.total.billed_ms)),
        ("CPU", money(c.total.cpu_micros)),
        ("Memory", money(c.total.memory_micros)),
    ];
    if c.total.gpu_micros != 0 {
        rows.push(("GPU", money(c.total.gpu_micros)));
    }
    rows.push(("Cost", money(c.total.total_micros)));
    let summary = key_values(&rows);
    let Some(instances) = &c.instances else {
        return summary;
    };
    if instances.is_empty() {
        return format!("{summary}\n\nInstances: none");
    }
    let mut t = table(&["INSTANCE", "STARTED", "ENDED", "BILLED", "COST"], &[3, 4]);
    for i in instances {
        t.add_row([
            i.instance_id.clone(),
            when(i.started_at.as_deref()),
            when(i.ended_at.as_deref()),
            duration(i.totals.billed_ms),
            money(i.totals.total_micros),
        ]);
    }
    format!("{summary}\n\n{}", finish(&t))
}

fn usage_query(a: &UsageArgs) -> Query {
    let given = [("from", a.from.clone()), ("to", a.to.clone()), ("group_by", a.group_by.clone())];
    given.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// Runs `eci usage` and returns the text to print.
pub async fn usage(api: &Api, args: UsageArgs, output: OutputFormat) -> Result<String> {
    let answer = api.get(&["v1", "usage"], &usage_query(&args)).await?;
    render::one(output, answer, "usage", usage_view)
}

/// Runs one `invoice` subcommand and returns the text to print.
pub async fn invoice(api: &Api, cmd: InvoiceCommand, output: OutputFormat) -> Result<String> {
    match cmd {
        InvoiceCommand::List => {
            let answer = api.get(&["v1", "invoices"], &Vec::new()).await?;
            match output {
                OutputFormat::Json => Ok(render::json(&answer)),
                OutputFormat::Table => {
                    Ok(invoices_table(&render::decode::<Vec<Invoice>>(answer, "invoices")?))
                }
            }
        }
        InvoiceCommand::Get { period, csv: true } => {
            let text =
                api.get_text(&["v1", "invoices", &period], &vec![("format", "csv".to_string())]).await?;
            Ok(text.trim_end().to_string())
        }
        InvoiceCommand::Get { period, csv: false } => {
            let answer = api.get(&["v1", "invoices", &period], &Vec::new()).await?;
            render::one(output, answer, "invoice", invoice_view)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_is_shown_to_the_micro_unit_without_rounding() {
        assert_eq!(money(0), "0.000000");
        assert_eq!(money(38_260), "0.038260");
        assert_eq!(money(-103_680_000), "-103.680000");
        assert_eq!(money(i64::MIN), "-9223372036854.775808");
        assert_eq!(duration(3_909_250), "1h 05m 09.250s");
    }

    #[test]
    fn usage_and_invoices_render_for_people() {
        let usage = json!({"from": "2030-01-01T00:00:00Z", "to": "2030-01-02T00:00:00Z", "as_of": "2030-01-02T00:00:00Z",
            "instances": 3, "total": {"billed_ms": 260000, "total_micros": 15600},
            "groups": [{"key": "", "instances": 1, "totals": {"billed_ms": 80000, "total_micros": 4800}},
                       {"key": "probe", "instances": 2, "totals": {"billed_ms": 180000, "total_micros": 10800}}]});
        let text = render::one(OutputFormat::Table, usage, "usage", usage_view).unwrap();
        assert!(text.contains("\nCost:       0.015600\n"), "{text}");
        assert!(text.contains("(none)") && text.contains("probe"), "{text}");

        let invoice = json!({"period": "2030-02", "state": "draft", "as_of": "2030-02-05T00:00:00Z", "total_micros": -103680000,
            "lines": [{"kind": "adjustment", "period": "2030-01", "runtime": "container", "tier": "*/*/*/*",
                       "price_id": "container-2030", "billed_ms": -1036800000, "amount_micros": -103680000}]});
        let text = render::one(OutputFormat::Table, invoice, "invoice", invoice_view).unwrap();
        assert!(text.contains("Total:   -103.680000"), "{text}");
        assert!(text.contains("adjustment") && text.contains("-288h 00m 00.000s"), "{text}");
        assert_eq!(invoices_table(&[]), "No invoices found.");
    }

    fn totals(billed_ms: i64, cpu: i64, memory: i64, gpu: i64) -> serde_json::Value {
        json!({"billed_ms": billed_ms, "cpu_milli_vcpu_ms": "0", "memory_mib_ms": "0", "gpu_ms": "0",
               "cpu_micros": cpu, "memory_micros": memory, "gpu_micros": gpu, "total_micros": cpu + memory + gpu})
    }

    #[test]
    fn a_cost_shows_its_owner_amounts_and_instances_when_listed() {
        let cost = json!({"group_id": "g-01", "as_of": "2030-01-02T00:00:00Z", "total": totals(260_000, 12_000, 3_600, 0)});
        let text = render::one(OutputFormat::Table, cost, "group cost", cost_view).unwrap();
        assert!(text.starts_with("Group:   g-01\nAs of:   "), "{text}");
        assert!(
            text.ends_with(
                "\nBilled:  0h 04m 20.000s\nCPU:     0.012000\nMemory:  0.003600\nCost:    0.015600"
            ),
            "{text}"
        );
        assert!(!text.contains("GPU") && !text.contains("INSTANCE"), "{text}");

        let cost = json!({"batch_id": "b-01", "as_of": null, "total": totals(80_000, 1, 2, 3),
            "instances": [{"instance_id": "i-01", "started_at": null, "ended_at": null, "totals": totals(80_000, 1, 2, 3)}]});
        let text = render::one(OutputFormat::Table, cost, "batch cost", cost_view).unwrap();
        assert!(text.starts_with("Batch:   b-01\n") && text.contains("\nGPU:     0.000003\n"), "{text}");
        assert!(
            text.ends_with(
                "\n\nINSTANCE   STARTED   ENDED           BILLED       COST\n\
                 i-01       -         -       0h 01m 20.000s   0.000006"
            ),
            "{text}"
        );

        let none = json!({"group_id": "g-02", "total": totals(0, 0, 0, 0), "instances": []});
        let text = render::one(OutputFormat::Table, none, "group cost", cost_view).unwrap();
        assert!(text.ends_with("\nCost:    0.000000\n\nInstances: none"), "{text}");
    }
}
