//! `eci admin idc list|get`: the fleet as operators watch it. For each IDC, what the fleet file lets
//! it sell (its bound), what its cluster was read to offer, what it sells of that, what is
//! allocated, reserved and free, and what is wrong with it (an IDC that sells less than it has
//! promised). Needs an admin key. Also `eci audit`, risk control's audit log, for tenants and admins.

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use super::OutputFormat;
use super::http::Api;
use super::render::{self, dash, finish, key_values, table, when};

/// The `admin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// The fleet's IDCs: what each may sell, what its cluster offers, what it sells and holds.
    #[command(subcommand)]
    Idc(IdcCommand),
    /// Risk control: the deletions it holds, approving one, resetting a breaker.
    #[command(subcommand)]
    Risk(RiskCommand),
}

/// The `admin risk` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RiskCommand {
    /// The deletions risk control holds, and the breakers open.
    Holds,
    /// Let one held deletion through once, without closing its breaker: the caller's next try (or
    /// the platform's next pass) goes through.
    Approve {
        /// Hold ID (rh-…).
        id: String,
    },
    /// Close a breaker and empty its window (`idc:<id>`, `tenant:<id>` or `platform`).
    Reset {
        /// The breaker.
        breaker: String,
    },
}

/// `eci audit`: which of the audit log's lines to show, newest last.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only those of this kind of actor: tenant, admin, expiry, scaler, reconciler, out_of_band.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only those with this verdict: allowed, denied, held.
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only those aimed at this id (an instance, a batch, a group, a namespace, an IDC).
    #[arg(long)]
    pub target: Option<String>,
    /// Only those decided at or after this moment, RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Every page, not only the first.
    #[arg(long)]
    pub all: bool,
}

/// Runs `eci audit`.
pub async fn audit(api: &Api, args: AuditArgs, output: OutputFormat) -> Result<String> {
    let query: Vec<(&'static str, String)> =
        [("actor", args.actor), ("verdict", args.verdict), ("target_id", args.target), ("since", args.since)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
    let page = api.list(&["v1", "risk", "audit"], &query, args.all).await?;
    if output == OutputFormat::Json {
        return Ok(render::json(&page));
    }
    let lines = page["items"].as_array().cloned().unwrap_or_default();
    if lines.is_empty() {
        return Ok("No audit lines found.".to_string());
    }
    let mut t = table(&["AT", "ACTOR", "WHO", "TARGET", "COUNT", "VERDICT", "RULE", "MESSAGE"], &[]);
    let field = |v: &Value| v.as_str().map_or_else(|| "-".to_string(), str::to_string);
    for l in &lines {
        let who = l["subject"].as_str().or(l["key_id"].as_str()).unwrap_or("-");
        t.add_row([
            field(&l["at"]),
            field(&l["actor"]),
            who.to_string(),
            format!("{} {}", field(&l["target_kind"]), field(&l["target_id"])),
            l["count"].to_string(),
            field(&l["verdict"]),
            field(&l["rule"]),
            field(&l["message"]),
        ]);
    }
    let mut text = finish(&t);
    if page["next_cursor"].as_str().is_some_and(|c| !c.is_empty()) {
        text.push_str("\n(more lines: --all)");
    }
    Ok(text)
}

/// The `admin idc` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum IdcCommand {
    /// List every IDC with what it sells beside what is allocated, reserved and free (CPU/memory).
    List,
    /// Show one IDC: its bound and headroom, its cluster as last read, what it sells and holds, and
    /// its conditions.
    Get {
        /// IDC ID.
        id: String,
    },
}

/// Runs one `admin` subcommand and returns the text to print.
pub async fn run(api: &Api, cmd: AdminCommand, output: OutputFormat) -> Result<String> {
    let cmd = match cmd {
        AdminCommand::Idc(cmd) => cmd,
        AdminCommand::Risk(cmd) => return risk(api, cmd, output).await,
    };
    match cmd {
        IdcCommand::List => {
            let answer = api.get(&["v1", "admin", "idcs"], &Vec::new()).await?;
            if output == OutputFormat::Json {
                return Ok(render::json(&answer));
            }
            Ok(idc_table(&render::decode::<Vec<Idc>>(answer, "list of IDCs")?))
        }
        IdcCommand::Get { id } => {
            let answer = api.get(&["v1", "admin", "idcs", &id], &Vec::new()).await?;
            render::one(output, answer, "IDC", idc_view)
        }
    }
}

async fn risk(api: &Api, cmd: RiskCommand, output: OutputFormat) -> Result<String> {
    let answer = match cmd {
        RiskCommand::Holds => {
            let holds = api.list(&["v1", "risk", "holds"], &Vec::new(), true).await?;
            let breakers = api.get(&["v1", "risk", "breakers"], &Vec::new()).await?;
            if output != OutputFormat::Json {
                return Ok(holds_text(&holds, &breakers));
            }
            serde_json::json!({ "holds": holds["items"], "breakers": breakers["open"] })
        }
        RiskCommand::Approve { id } => {
            api.post(&["v1", "admin", "risk", "holds", &id, "approve"], &serde_json::json!({}), None).await?
        }
        RiskCommand::Reset { breaker } => {
            api.post(&["v1", "admin", "risk", "breakers", &breaker, "reset"], &serde_json::json!({}), None)
                .await?
        }
    };
    Ok(match output {
        OutputFormat::Json => render::json(&answer),
        _ => format!(
            "{} {}",
            answer["id"].as_str().or(answer["breaker"].as_str()).unwrap_or("-"),
            answer["state"].as_str().map_or_else(|| "reset".to_string(), str::to_string)
        ),
    })
}

/// One line per held deletion (id, what, how many, the rule and breaker), then the open breakers.
fn holds_text(holds: &Value, breakers: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut lines: Vec<String> = holds["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            format!(
                "{}  {} {} ({} instances) by {}: {} {}, {}",
                text(&h["id"]),
                text(&h["target_kind"]),
                text(&h["target_id"]),
                h["count"],
                text(&h["actor"]),
                text(&h["rule"]),
                text(&h["breaker"]),
                text(&h["state"])
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("no deletion is held".into());
    }
    for b in breakers["open"].as_array().into_iter().flatten() {
        lines.push(format!("breaker {} open since {}", text(&b["breaker"]), text(&b["tripped_at"])));
    }
    lines.join("\n")
}

/// The client's view of an IDC; lenient like its other views.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Idc {
    id: String,
    name: Option<String>,
    region: Option<String>,
    province: Option<String>,
    city: Option<String>,
    carriers: Vec<String>,
    runtimes: Vec<String>,
    status: Option<String>,
    /// The fleet's bound.
    capacity: Value,
    headroom_percent: Option<u64>,
    sellable: Value,
    /// `None` until the cluster was first read.
    cluster: Option<Cluster>,
    conditions: Vec<Condition>,
    reserved: Value,
    allocated: Value,
    free: Value,
}

/// An IDC's cluster as last read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cluster {
    nodes: u64,
    schedulable_nodes: u64,
    allocatable: Value,
    foreign: Value,
    node_shapes: Vec<Value>,
    read_at: Option<String>,
}

/// Something wrong with an IDC; only its type and message are shown, so that a type this client
/// does not know yet is shown all the same.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// `32/128Gi`: CPU and memory of an amount, and its GPUs when it has any, short enough for a table.
fn amount(v: &Value) -> String {
    let part = |key: &str| v.get(key).map(render::plain).unwrap_or_else(|| "-".to_string());
    match v.get("gpu").and_then(Value::as_u64) {
        Some(gpu) if gpu > 0 => format!("{}/{}/{gpu}gpu", part("cpu"), part("memory")),
        _ => format!("{}/{}", part("cpu"), part("memory")),
    }
}

fn idc_table(idcs: &[Idc]) -> String {
    if idcs.is_empty() {
        return "No IDCs found.".to_string();
    }
    let mut t = table(
        &["ID", "STATUS", "CITY", "BOUND", "SELLABLE", "ALLOCATED", "RESERVED", "FREE", "CONDITIONS"],
        &[],
    );
    for i in idcs {
        let conditions: Vec<&str> = i.conditions.iter().map(|c| c.kind.as_str()).collect();
        t.add_row([
            i.id.clone(),
            dash(i.status.as_deref()),
            dash(i.city.as_deref()),
            amount(&i.capacity),
            amount(&i.sellable),
            amount(&i.allocated),
            amount(&i.reserved),
            amount(&i.free),
            if conditions.is_empty() { "-".to_string() } else { conditions.join(",") },
        ]);
    }
    finish(&t)
}

fn idc_view(i: &Idc) -> String {
    let area = [&i.region, &i.province, &i.city].map(|p| dash(p.as_deref())).join("/");
    let list = |items: &[String]| if items.is_empty() { "-".to_string() } else { items.join(", ") };
    let mut rows = vec![
        ("ID", i.id.clone()),
        ("Name", dash(i.name.as_deref())),
        ("Status", dash(i.status.as_deref())),
        ("Area", area),
        ("Carriers", list(&i.carriers)),
        ("Runtimes", list(&i.runtimes)),
        ("Bound", render::spec(&i.capacity)),
        ("Headroom", i.headroom_percent.map(|p| format!("{p}%")).unwrap_or_else(|| "-".to_string())),
    ];
    match &i.cluster {
        None => rows.push(("Cluster", "not read yet".to_string())),
        Some(c) => {
            let shapes: Vec<String> = c.node_shapes.iter().map(render::spec).collect();
            rows.extend([
                ("Nodes", format!("{} ({} schedulable)", c.nodes, c.schedulable_nodes)),
                ("Allocatable", render::spec(&c.allocatable)),
                ("Foreign", render::spec(&c.foreign)),
                ("Node shapes", if shapes.is_empty() { "-".to_string() } else { shapes.join("; ") }),
                ("Read at", when(c.read_at.as_deref())),
            ]);
        }
    }
    rows.extend([
        ("Sellable", render::spec(&i.sellable)),
        ("Allocated", render::spec(&i.allocated)),
        ("Reserved", render::spec(&i.reserved)),
        ("Free", render::spec(&i.free)),
    ]);
    let view = key_values(&rows);
    if i.conditions.is_empty() {
        return view;
    }
    let conditions: Vec<String> =
        i.conditions.iter().map(|c| format!("  {}: {}", c.kind, c.message)).collect();
    format!("{view}\n\nConditions:\n{}", conditions.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AdminCommand,
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        let Cli { cmd: AdminCommand::Idc(IdcCommand::Get { id }) } =
            Cli::try_parse_from(["eci", "idc", "get", "gd-gz-1"]).unwrap()
        else {
            panic!("not a get");
        };
        assert_eq!(id, "gd-gz-1");
    }

    fn short() -> Value {
        json!({
            "id": "gd-gz-1", "name": "Guangzhou 1", "region": "south-china", "province": "guangdong",
            "city": "guangzhou", "carriers": ["telecom", "unicom"], "runtimes": ["container"],
            "status": "active", "capacity": {"cpu": "32", "memory": "128Gi", "gpu": 0},
            "headroom_percent": 10, "sellable": {"cpu": "15", "memory": "60Gi", "gpu": 0},
            "cluster": {
                "nodes": 3, "schedulable_nodes": 2,
                "allocatable": {"cpu": "16", "memory": "64Gi", "gpu": 0},
                "foreign": {"cpu": "1", "memory": "4Gi", "gpu": 0},
                "node_shapes": [
                    {"cpu": "7", "memory": "28Gi", "gpu": 0}, {"cpu": "4", "memory": "32Gi", "gpu": 0}
                ],
                "read_at": "2030-01-01T00:01:00Z"
            },
            "conditions": [{
                "type": "capacity_short",
                "message": "the cluster backs cpu 15, memory 60Gi of the cpu 20, memory 80Gi promised to instances \
                    and reservations: short by cpu 5, memory 20Gi",
                "short_by": {"cpu": "5", "memory": "20Gi", "gpu": 0}
            }],
            "kube_context": null, "rich_runtime_class": null, "ssh_ingress_host": null,
            "reserved": {"cpu": "0", "memory": "0Mi", "gpu": 0},
            "allocated": {"cpu": "20", "memory": "80Gi", "gpu": 0},
            "free": {"cpu": "0", "memory": "0Mi", "gpu": 0}
        })
    }

    #[test]
    fn one_idc_shows_its_bound_its_cluster_what_it_sells_and_its_conditions() {
        let text = render::one(OutputFormat::Table, short(), "IDC", idc_view).unwrap();
        let read_at = when(Some("2030-01-01T00:01:00Z"));
        assert_eq!(
            text,
            format!(
                "ID:           gd-gz-1\n\
                 Name:         Guangzhou 1\n\
                 Status:       active\n\
                 Area:         south-china/guangdong/guangzhou\n\
                 Carriers:     telecom, unicom\n\
                 Runtimes:     container\n\
                 Bound:        cpu=32 memory=128Gi\n\
                 Headroom:     10%\n\
                 Nodes:        3 (2 schedulable)\n\
                 Allocatable:  cpu=16 memory=64Gi\n\
                 Foreign:      cpu=1 memory=4Gi\n\
                 Node shapes:  cpu=7 memory=28Gi; cpu=4 memory=32Gi\n\
                 Read at:      {read_at}\n\
                 Sellable:     cpu=15 memory=60Gi\n\
                 Allocated:    cpu=20 memory=80Gi\n\
                 Reserved:     cpu=0 memory=0Mi\n\
                 Free:         cpu=0 memory=0Mi\n\
                 \n\
                 Conditions:\n  \
                 capacity_short: the cluster backs cpu 15, memory 60Gi of the cpu 20, memory 80Gi promised to instances \
                 and reservations: short by cpu 5, memory 20Gi"
            )
        );
    }

    #[test]
    fn an_idc_whose_cluster_was_never_read_says_so() {
        let mut unread = short();
        unread["cluster"] = Value::Null;
        unread["conditions"] = json!([]);
        let text = render::one(OutputFormat::Table, unread, "IDC", idc_view).unwrap();
        assert!(text.contains("\nHeadroom:   10%\nCluster:    not read yet\nSellable:"), "{text}");
        assert!(!text.contains("Conditions"), "{text}");
    }

    #[test]
    fn the_list_shows_what_each_idc_sells_beside_what_it_holds() {
        let mut gpus = short();
        gpus["id"] = json!("zj-hz-2");
        gpus["city"] = json!("hangzhou");
        gpus["conditions"] = json!([]);
        gpus["sellable"] = json!({"cpu": "16", "memory": "64Gi", "gpu": 4});
        let idcs: Vec<Idc> = render::decode(json!([short(), gpus]), "list of IDCs").unwrap();
        assert_eq!(
            idc_table(&idcs),
            "ID        STATUS   CITY        BOUND      SELLABLE       ALLOCATED   RESERVED   FREE    CONDITIONS\n\
             gd-gz-1   active   guangzhou   32/128Gi   15/60Gi        20/80Gi     0/0Mi      0/0Mi   capacity_short\n\
             zj-hz-2   active   hangzhou    32/128Gi   16/64Gi/4gpu   20/80Gi     0/0Mi      0/0Mi   -"
        );
        assert_eq!(idc_table(&[]), "No IDCs found.");
    }
}
