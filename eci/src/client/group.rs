//! `eci group create|list|get|events|cost|patch|delete`: autoscaled groups, which the scaler keeps
//! at the count their windows, load and bounds ask for. A group's template, placement, windows and
//! load policy are more than flags can say, so `create` and `patch` read the request body from a
//! file (`-f FILE`, JSON or YAML, `-f -` for stdin) and send it as JSON; the views show what the
//! scaler last decided and why.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

use super::billing;
use super::http::{Api, Query};
use super::render::{self, dash, finish, key_values, table, when};
use super::{OutputFormat, parse};

/// The `group` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group from a file holding the body of `POST /v1/groups`.
    Create {
        #[command(flatten)]
        file: BodyFile,
    },
    /// List groups: the active ones, or the deleted ones.
    List(GroupListArgs),
    /// Show one group: its counts and why, its active window, metric and conditions, and its policy.
    Get {
        /// Group ID (g-…).
        id: String,
    },
    /// A group's events, oldest first: every decision with its reason, what was placed or released.
    Events(GroupEventsArgs),
    /// What a group's instances have cost so far, those it released included.
    Cost {
        /// Group ID (g-…).
        id: String,
        /// Also list each instance's cost.
        #[arg(long)]
        instances: bool,
    },
    /// Change a group: the fields in the file (the body of `PATCH /v1/groups/{id}`) replace its own.
    Patch {
        /// Group ID (g-…).
        id: String,
        #[command(flatten)]
        file: BodyFile,
    },
    /// Delete a group: it ends at once and all its instances are released.
    Delete {
        /// Group ID (g-…).
        id: String,
        /// The number of instances it ends, when the platform asks for it to be confirmed (a
        /// deletion ending most of your instances, or very many).
        #[arg(long, value_name = "COUNT")]
        confirm: Option<u64>,
    },
}

/// Where `create` and `patch` read their request body.
#[derive(Debug, clap::Args)]
pub struct BodyFile {
    /// JSON or YAML file holding the request body (`.json`, `.yaml`, `.yml`; otherwise JSON if it
    /// starts with `{`), or `-` for standard input. Quote cron expressions that start with `*`.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

/// Filters and paging of `group list`.
#[derive(Debug, clap::Args)]
pub struct GroupListArgs {
    /// Which groups: the active ones (the API's default) or the deleted ones.
    #[arg(long, value_parser = parse::group_states())]
    pub state: Option<String>,
    /// Groups per page.
    #[arg(long, value_name = "N", value_parser = parse::positive::<u32>)]
    pub limit: Option<u32>,
    /// Follow the cursors and list every page.
    #[arg(long)]
    pub all: bool,
}

/// Which events of `group events`, and their paging.
#[derive(Debug, clap::Args)]
pub struct GroupEventsArgs {
    /// Group ID (g-…).
    pub id: String,
    /// Events per page.
    #[arg(long, value_name = "N", value_parser = parse::positive::<u32>)]
    pub limit: Option<u32>,
    /// Follow the cursors and list every page.
    #[arg(long)]
    pub all: bool,
}

/// Runs one `group` subcommand and returns the text to print.
pub async fn run(api: &Api, cmd: GroupCommand, output: OutputFormat) -> Result<String> {
    match cmd {
        GroupCommand::Create { file } => {
            let body = read_body(&file.file)?;
            let answer = api.post(&["v1", "groups"], &body, None).await?;
            render::one(output, answer, "group", group_view)
        }
        GroupCommand::List(args) => {
            let answer = api.list(&["v1", "groups"], &list_query(&args), args.all).await?;
            render::many(output, answer, "groups", group_table)
        }
        GroupCommand::Get { id } => {
            let answer = api.get(&["v1", "groups", &id], &Vec::new()).await?;
            render::one(output, answer, "group", group_view)
        }
        GroupCommand::Events(args) => {
            let answer =
                api.list(&["v1", "groups", &args.id, "events"], &events_query(&args), args.all).await?;
            render::many(output, answer, "events", event_table)
        }
        GroupCommand::Cost { id, instances } => {
            let query = if instances { vec![("instances", "true".to_string())] } else { Vec::new() };
            let answer = api.get(&["v1", "groups", &id, "cost"], &query).await?;
            render::one(output, answer, "group cost", billing::cost_view)
        }
        GroupCommand::Patch { id, file } => {
            let body = read_body(&file.file)?;
            let answer = api.patch(&["v1", "groups", &id], &body).await?;
            render::one(output, answer, "group", group_view)
        }
        GroupCommand::Delete { id, confirm } => {
            let answer = api.delete(&["v1", "groups", &id], confirm).await?;
            render::one(output, answer, "group", |g: &Group| {
                format!("group {} is {}", g.id, dash(g.state.as_deref()))
            })
        }
    }
}

/// How a body file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By the file's extension; otherwise (stdin, no or another extension) JSON if the text starts
    /// with `{`, YAML if not, so that each is read by its own parser and its errors make sense.
    fn of(file: &Path, text: &str) -> Format {
        match file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads `-f FILE` (or stdin for `-`) into the JSON body to send.
fn read_body(file: &Path) -> Result<Value> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| anyhow!("cannot read standard input: {e}"))?;
        return parse_body(&text, Format::of(file, &text), "standard input");
    }
    let text = std::fs::read_to_string(file).map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
    parse_body(&text, Format::of(file, &text), &file.display().to_string())
}

/// The body written in `text`: one object, with the template's CPU and memory made text if they
/// were written as numbers (`cpu: 2` in YAML), since the API takes quantities as strings.
fn parse_body(text: &str, format: Format, source: &str) -> Result<Value> {
    let mut body: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| anyhow!("{source} is not valid JSON: {e}"))?,
        Format::Yaml => serde_yaml::from_str(text).map_err(|e| {
            // A plain `*/5 * * * *` reads as an alias to YAML: say what the user meant to write.
            let hint = if e.to_string().contains("alias") {
                " (quote a cron expression that starts with `*`)"
            } else {
                ""
            };
            anyhow!("{source} is not valid YAML: {e}{hint}")
        })?,
    };
    match &body {
        Value::Object(_) => {}
        Value::Null => bail!("{source} is empty; expected the request body, an object"),
        other => bail!("{source} holds {}, not an object: expected the request body", kind(other)),
    }
    if let Some(spec) = body.pointer_mut("/template/spec").and_then(Value::as_object_mut) {
        for key in ["cpu", "memory"] {
            if let Some(n @ Value::Number(_)) = spec.get(key) {
                let quantity = Value::String(n.to_string());
                spec.insert(key.to_string(), quantity);
            }
        }
    }
    Ok(body)
}

/// What a JSON value is, for a message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The query of `GET /v1/groups`.
fn list_query(a: &GroupListArgs) -> Query {
    let given = [("state", a.state.clone()), ("limit", a.limit.map(|n| n.to_string()))];
    given.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// The query of `GET /v1/groups/{id}/events`.
fn events_query(a: &GroupEventsArgs) -> Query {
    a.limit.map(|n| ("limit", n.to_string())).into_iter().collect()
}

/// The client's view of a group; lenient like its other views, so that a field the server adds or
/// leaves out does not break the table.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Group {
    id: String,
    name: String,
    state: Option<String>,
    generation: u64,
    mode: Option<String>,
    current: u64,
    desired: u64,
    /// Why `desired`, in the scaler's words; empty before its first tick.
    reason: Option<String>,
    decided_at: Option<String>,
    active_window: Option<ActiveWindow>,
    next_boundary: Option<String>,
    metric: Option<Reading>,
    conditions: Vec<String>,
    avoided_idcs: Vec<Avoided>,
    template: Template,
    placement: Placement,
    min: u64,
    max: u64,
    schedules: Vec<Window>,
    load: Option<Load>,
    created_at: Option<String>,
    deleted_at: Option<String>,
}

/// The window booking the most now.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActiveWindow {
    index: usize,
    desired: u64,
    /// Its start less its lead: when the group began growing for it.
    opens_at: Option<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
}

/// The load policy's metric at the last tick.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Reading {
    value: f64,
    reporting: u64,
    age_seconds: i64,
}

/// An IDC the group keeps away from.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Avoided {
    idc_id: String,
    until: Option<String>,
    strikes: u64,
}

/// What every instance of the group is, as far as the view shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Template {
    spec: Value,
    image: Option<String>,
    runtime: Option<String>,
    labels: BTreeMap<String, String>,
}

/// Where the group's instances may go.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Placement {
    areas: Vec<String>,
    carriers: Vec<String>,
    strategy: Option<String>,
    carrier_per_idc: Option<String>,
    max_per_idc: Option<u64>,
}

/// A booked window.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Window {
    start: String,
    end: String,
    timezone: String,
    desired: u64,
    lead_seconds: Option<u64>,
}

/// Following a metric.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Load {
    metric: String,
    target: f64,
    tolerance: Option<f64>,
    scale_up: Rules,
    scale_down: Rules,
}

/// How the group moves in one direction.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Rules {
    stabilisation_seconds: Option<u64>,
    policies: Option<Vec<RatePolicy>>,
    select: Option<String>,
}

/// How far the group may move over a period.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RatePolicy {
    #[serde(rename = "type")]
    kind: String,
    value: u64,
    period_seconds: u64,
}

/// One of a group's events.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    at: Option<String>,
    kind: String,
    current: u64,
    desired: u64,
    message: String,
}

fn group_table(groups: &[Group]) -> String {
    let mut t = table(&["ID", "NAME", "MODE", "CURRENT", "DESIRED", "CONDITIONS", "NEXT BOUNDARY"], &[3, 4]);
    for g in groups {
        t.add_row([
            g.id.clone(),
            g.name.clone(),
            dash(g.mode.as_deref()),
            g.current.to_string(),
            g.desired.to_string(),
            words(&g.conditions, ","),
            when(g.next_boundary.as_deref()),
        ]);
    }
    finish(&t)
}

fn group_view(g: &Group) -> String {
    let percent = g.load.as_ref().is_some_and(|l| l.metric == "cpu");
    let mut rows = vec![
        ("ID", g.id.clone()),
        ("Name", g.name.clone()),
        ("State", dash(g.state.as_deref())),
        ("Mode", dash(g.mode.as_deref())),
        ("Generation", g.generation.to_string()),
        ("Current/desired", format!("{} / {}", g.current, g.desired)),
        ("Reason", dash(g.reason.as_deref().map(one_line).as_deref())),
        ("Decided", when(g.decided_at.as_deref())),
        ("Active window", g.active_window.as_ref().map_or_else(|| "-".to_string(), active_window)),
        ("Next boundary", when(g.next_boundary.as_deref())),
        ("Metric", g.metric.as_ref().map_or_else(|| "-".to_string(), |m| reading(m, percent))),
        ("Conditions", words(&g.conditions, ", ")),
        ("Avoided IDCs", avoided(&g.avoided_idcs)),
        ("Min/max", format!("{} / {}", g.min, g.max)),
        ("Load", g.load.as_ref().map_or_else(|| "-".to_string(), load)),
    ];
    if let Some(l) = &g.load {
        rows.push(("Scale up", rules(&l.scale_up)));
        rows.push(("Scale down", rules(&l.scale_down)));
    }
    rows.extend([
        ("Spec", render::spec(&g.template.spec)),
        ("Runtime", dash(g.template.runtime.as_deref())),
        ("Image", dash(g.template.image.as_deref())),
        ("Labels", render::labels(&g.template.labels)),
        ("Placement", placement(&g.placement)),
        ("Created", when(g.created_at.as_deref())),
        ("Deleted", when(g.deleted_at.as_deref())),
    ]);
    let header = key_values(&rows);
    if g.schedules.is_empty() {
        return format!("{header}\n\nSchedules: none");
    }
    let lines: Vec<String> =
        g.schedules.iter().enumerate().map(|(i, w)| format!("  #{i}  {}", window(w))).collect();
    format!("{header}\n\nSchedules:\n{}", lines.join("\n"))
}

fn event_table(events: &[Event]) -> String {
    let mut t = table(&["AT", "KIND", "CURRENT", "DESIRED", "MESSAGE"], &[2, 3]);
    for e in events {
        t.add_row([
            when(e.at.as_deref()),
            e.kind.clone(),
            e.current.to_string(),
            e.desired.to_string(),
            one_line(&e.message),
        ]);
    }
    finish(&t)
}

/// `#0: 6 from 2025-03-01 20:00:00 to 2025-03-01 23:00:00`, and when the group began growing for
/// it if its lead made that earlier than its start.
fn active_window(w: &ActiveWindow) -> String {
    let span = format!(
        "#{}: {} from {} to {}",
        w.index,
        w.desired,
        when(w.starts_at.as_deref()),
        when(w.ends_at.as_deref())
    );
    match &w.opens_at {
        Some(opens) if w.starts_at.as_ref() != Some(opens) => {
            format!("{span} (growing from {})", when(Some(opens)))
        }
        _ => span,
    }
}

/// `0 20 * * * → 0 23 * * * Asia/Shanghai: 6 (lead 600s)`; no lead when there is none.
fn window(w: &Window) -> String {
    let lead = match w.lead_seconds {
        Some(s) if s > 0 => format!(" (lead {s}s)"),
        _ => String::new(),
    };
    format!("{} → {} {}: {}{lead}", w.start, w.end, w.timezone, w.desired)
}

/// `62.5% from 3 instances, 12s old`.
fn reading(m: &Reading, percent: bool) -> String {
    let unit = if percent { "%" } else { "" };
    let instances = if m.reporting == 1 { "instance" } else { "instances" };
    format!("{}{unit} from {} {instances}, {}s old", measured(m.value), m.reporting, m.age_seconds)
}

/// `cpu target 60% (tolerance 0.1)`.
fn load(l: &Load) -> String {
    let unit = if l.metric == "cpu" { "%" } else { "" };
    let tolerance = l.tolerance.map(|t| format!(" (tolerance {t})")).unwrap_or_default();
    format!("{} target {}{unit}{tolerance}", dash(Some(&l.metric)), l.target)
}

/// One direction's rules: `the larger of 4 instances per 15s, 100% per 15s; stabilisation 300s`.
fn rules(r: &Rules) -> String {
    let select = r.select.as_deref().unwrap_or("max");
    if select == "disabled" {
        return "disabled".to_string();
    }
    let policies: Vec<String> = r
        .policies
        .iter()
        .flatten()
        .map(|p| match p.kind.as_str() {
            "percent" => format!("{}% per {}s", p.value, p.period_seconds),
            _ => format!("{} instances per {}s", p.value, p.period_seconds),
        })
        .collect();
    let rate = match (policies.len(), select) {
        (0, _) => "default rate".to_string(),
        (1, _) => policies[0].clone(),
        (_, "min") => format!("the smaller of {}", policies.join(", ")),
        _ => format!("the larger of {}", policies.join(", ")),
    };
    match r.stabilisation_seconds {
        Some(s) => format!("{rate}; stabilisation {s}s"),
        None => rate,
    }
}

/// `guangdong, shenzhen on telecom, unicom, pack, one carrier per IDC, at most 5 per IDC`.
fn placement(p: &Placement) -> String {
    let areas = if p.areas.is_empty() { "anywhere".to_string() } else { p.areas.join(", ") };
    let carriers = if p.carriers.is_empty() { "any carrier".to_string() } else { p.carriers.join(", ") };
    let mut parts = vec![format!("{areas} on {carriers}")];
    parts.extend(p.strategy.clone());
    if p.carrier_per_idc.as_deref() == Some("one") {
        parts.push("one carrier per IDC".to_string());
    }
    if let Some(n) = p.max_per_idc {
        parts.push(format!("at most {n} per IDC"));
    }
    parts.join(", ")
}

/// `idc-sz-1 until 2025-03-01 10:00:00 (2 strikes); …`.
fn avoided(idcs: &[Avoided]) -> String {
    if idcs.is_empty() {
        return "-".to_string();
    }
    let each = idcs.iter().map(|a| {
        let strikes = if a.strikes == 1 { "strike" } else { "strikes" };
        format!("{} until {} ({} {strikes})", a.idc_id, when(a.until.as_deref()), a.strikes)
    });
    each.collect::<Vec<_>>().join("; ")
}

/// Words joined by `sep`; `-` when there are none.
fn words(list: &[String], sep: &str) -> String {
    if list.is_empty() { "-".to_string() } else { list.join(sep) }
}

/// A measured value to two decimals at most: an average of samples has more digits than it means.
fn measured(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Collapses all whitespace runs (newlines included) into single spaces, one table row per event.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: GroupCommand,
    }

    fn parsed(argv: &[&str]) -> GroupCommand {
        Cli::try_parse_from(["eci"].iter().chain(argv)).unwrap().cmd
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_and_patch_take_a_file_or_stdin() {
        let GroupCommand::Create { file } = parsed(&["create", "-f", "web.yaml"]) else {
            panic!("not create")
        };
        assert_eq!(file.file, PathBuf::from("web.yaml"));
        let GroupCommand::Patch { id, file } = parsed(&["patch", "g-1", "--file", "-"]) else {
            panic!("not patch")
        };
        assert_eq!((id.as_str(), file.file), ("g-1", PathBuf::from("-")));
        assert!(Cli::try_parse_from(["eci", "create"]).is_err(), "the file is required");
        assert!(Cli::try_parse_from(["eci", "patch", "g-1"]).is_err(), "the file is required");
    }

    #[test]
    fn list_and_events_flags_become_query_parameters() {
        let GroupCommand::List(args) = parsed(&["list", "--state", "deleted", "--limit", "5", "--all"])
        else {
            panic!("not list")
        };
        assert!(args.all);
        assert_eq!(list_query(&args), [("state", "deleted".into()), ("limit", "5".into())]);
        let GroupCommand::List(args) = parsed(&["list"]) else { panic!("not list") };
        assert!(list_query(&args).is_empty());
        assert!(Cli::try_parse_from(["eci", "list", "--state", "paused"]).is_err());

        let GroupCommand::Events(args) = parsed(&["events", "g-1", "--limit", "20"]) else {
            panic!("not events")
        };
        assert_eq!((args.id.as_str(), args.all), ("g-1", false));
        assert_eq!(events_query(&args), [("limit", "20".into())]);
        assert!(Cli::try_parse_from(["eci", "events", "g-1", "--limit", "0"]).is_err());

        let GroupCommand::Cost { id, instances } = parsed(&["cost", "g-1", "--instances"]) else {
            panic!("not cost")
        };
        assert_eq!((id.as_str(), instances), ("g-1", true));
    }

    const YAML: &str = "\
name: web
template:
  spec: {cpu: 2, memory: 4Gi}
  image: nginx:1.27
  env: {MODE: edge}
placement:
  areas: [guangdong]
  carriers: [telecom, unicom]
min: 1
max: 10
schedules:
  - start: 0 20 * * *
    end: 0 23 * * *
    timezone: Asia/Shanghai
    desired: 6
    lead_seconds: 600
load:
  metric: cpu
  target: 60
  scale_down:
    stabilisation_seconds: 300
    policies: [{type: percent, value: 50, period_seconds: 60}]
mode: preview
";

    #[test]
    fn a_yaml_file_becomes_the_json_body_with_quantities_as_text() {
        let body = parse_body(YAML, Format::of(Path::new("web.yaml"), YAML), "web.yaml").unwrap();
        assert_eq!(
            body,
            json!({
                "name": "web",
                "template": {"spec": {"cpu": "2", "memory": "4Gi"}, "image": "nginx:1.27", "env": {"MODE": "edge"}},
                "placement": {"areas": ["guangdong"], "carriers": ["telecom", "unicom"]},
                "min": 1,
                "max": 10,
                "schedules": [{"start": "0 20 * * *", "end": "0 23 * * *", "timezone": "Asia/Shanghai",
                               "desired": 6, "lead_seconds": 600}],
                "load": {"metric": "cpu", "target": 60,
                         "scale_down": {"stabilisation_seconds": 300,
                                        "policies": [{"type": "percent", "value": 50, "period_seconds": 60}]}},
                "mode": "preview",
            })
        );
        let half = parse_body("template: {spec: {cpu: 0.5, memory: 1Gi}}", Format::Yaml, "-").unwrap();
        assert_eq!(half["template"]["spec"]["cpu"], "0.5");
    }

    #[test]
    fn json_is_read_as_json_and_the_format_follows_the_extension_or_the_text() {
        let text = r#"{"min": 2, "generation": 3}"#;
        assert_eq!(Format::of(Path::new("-"), text), Format::Json);
        assert_eq!(Format::of(Path::new("patch"), "  \n{}"), Format::Json);
        assert_eq!(Format::of(Path::new("-"), "min: 2"), Format::Yaml);
        assert_eq!(Format::of(Path::new("p.JSON"), "min: 2"), Format::Json);
        assert_eq!(Format::of(Path::new("p.yml"), "{}"), Format::Yaml);
        assert_eq!(parse_body(text, Format::Json, "-").unwrap(), json!({"min": 2, "generation": 3}));
        // `load: null` removes the load policy, so a null is sent as written.
        assert_eq!(parse_body("load: null", Format::Yaml, "-").unwrap(), json!({"load": null}));
    }

    #[test]
    fn a_file_that_is_not_one_object_is_refused_naming_it() {
        let err = |text: &str, format| parse_body(text, format, "g.yaml").unwrap_err().to_string();
        let json = err("{\"min\": 1,}", Format::Json);
        assert!(json.starts_with("g.yaml is not valid JSON: "), "{json}");
        assert!(err("min: [1", Format::Yaml).starts_with("g.yaml is not valid YAML: "));
        let cron = err("start: */5 * * * *", Format::Yaml);
        assert!(cron.starts_with("g.yaml is not valid YAML: "), "{cron}");
        assert!(cron.ends_with(" (quote a cron expression that starts with `*`)"), "{cron}");
        assert!(!err("min: [1", Format::Yaml).contains("cron"));
        assert_eq!(err("", Format::Yaml), "g.yaml is empty; expected the request body, an object");
        assert_eq!(
            err("- name: web", Format::Yaml),
            "g.yaml holds a list, not an object: expected the request body"
        );
        assert!(!err("a: 1\nb: [", Format::Yaml).contains('\n'), "one line");
    }

    #[test]
    fn a_missing_file_is_named() {
        let missing =
            std::env::temp_dir().join(format!("eci-group-test-{}-missing.yaml", std::process::id()));
        let err = read_body(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot read {}: ", missing.display())), "{err}");
    }

    fn sample() -> Value {
        json!({
            "id": "g-01", "name": "web", "state": "active", "generation": 3, "mode": "auto",
            "current": 4, "desired": 6, "reason": "window #0 books 6",
            "decided_at": "2025-03-01T12:00:00Z",
            "active_window": {"index": 0, "desired": 6, "opens_at": "2025-03-01T11:50:00Z",
                              "starts_at": "2025-03-01T12:00:00Z", "ends_at": "2025-03-01T15:00:00Z"},
            "next_boundary": "2025-03-01T15:00:00Z",
            "metric": {"value": 62.456, "reporting": 4, "sampled_at": "2025-03-01T11:59:48Z", "age_seconds": 12},
            "conditions": ["capacity_limited", "avoiding_idcs"],
            "avoided_idcs": [{"idc_id": "idc-sz-1", "until": "2025-03-01T12:10:00Z", "strikes": 2}],
            "template": {"spec": {"cpu": "2", "memory": "4Gi", "gpu": 0}, "image": "nginx:1.27", "command": [],
                         "args": [], "env": {}, "ports": [], "runtime": "container", "ssh_keys": [],
                         "labels": {"app": "web"}, "create_timeout_seconds": null},
            "placement": {"areas": ["guangdong"], "carriers": ["telecom", "unicom"], "strategy": "spread",
                          "carrier_per_idc": null, "max_per_idc": 5, "all_or_nothing": null},
            "min": 1, "max": 10,
            "schedules": [
                {"start": "0 20 * * *", "end": "0 23 * * *", "timezone": "Asia/Shanghai", "desired": 6, "lead_seconds": 600},
                {"start": "0 9 * * 1-5", "end": "0 18 * * 1-5", "timezone": "UTC", "desired": 2, "lead_seconds": 0}
            ],
            "load": {"metric": "cpu", "target": 60.0, "tolerance": 0.1,
                     "scale_up": {"stabilisation_seconds": 0, "select": "max", "policies": [
                         {"type": "instances", "value": 4, "period_seconds": 15},
                         {"type": "percent", "value": 100, "period_seconds": 15}]},
                     "scale_down": {"stabilisation_seconds": 300, "select": "max", "policies": [
                         {"type": "percent", "value": 100, "period_seconds": 15}]}},
            "created_at": "2025-03-01T10:00:00Z", "deleted_at": null
        })
    }

    #[test]
    fn groups_render_as_a_table() {
        let quiet = json!({"id": "g-02", "name": "batch-jobs", "mode": "preview", "current": 0, "desired": 0,
                           "conditions": [], "next_boundary": null});
        let page = json!({"items": [sample(), quiet], "next_cursor": null});
        let text = render::many(OutputFormat::Table, page, "groups", group_table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "ID     NAME         MODE      CURRENT   DESIRED   CONDITIONS                       NEXT BOUNDARY"
        );
        assert!(
            lines[1].starts_with(
                "g-01   web          auto            4         6   capacity_limited,avoiding_idcs   2025-03-0"
            ),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "g-02   batch-jobs   preview         0         0   -                                -"
        );
        let empty = render::many(OutputFormat::Table, json!({"items": []}), "groups", group_table).unwrap();
        assert_eq!(empty, "No groups found.");
    }

    #[test]
    fn one_group_shows_why_it_has_its_count() {
        let text = render::one(OutputFormat::Table, sample(), "group", group_view).unwrap();
        let row = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).map(str::trim).unwrap_or_else(
                || {
                    panic!("no {key} in {text}");
                },
            )
        };
        assert!(text.starts_with("ID:               g-01\nName:             web\n"), "{text}");
        assert_eq!(row("Generation"), "3");
        assert_eq!(row("Current/desired"), "4 / 6");
        assert_eq!(row("Reason"), "window #0 books 6");
        assert!(
            row("Active window").starts_with("#0: 6 from 2025-03-0")
                && row("Active window").contains(" (growing from 2025-03-0"),
            "{text}"
        );
        assert_eq!(row("Metric"), "62.46% from 4 instances, 12s old");
        assert_eq!(row("Conditions"), "capacity_limited, avoiding_idcs");
        assert!(
            row("Avoided IDCs").starts_with("idc-sz-1 until 2025-03-0")
                && row("Avoided IDCs").ends_with(" (2 strikes)"),
            "{text}"
        );
        assert_eq!(row("Min/max"), "1 / 10");
        assert_eq!(row("Load"), "cpu target 60% (tolerance 0.1)");
        assert_eq!(row("Scale up"), "the larger of 4 instances per 15s, 100% per 15s; stabilisation 0s");
        assert_eq!(row("Scale down"), "100% per 15s; stabilisation 300s");
        assert_eq!(row("Spec"), "cpu=2 memory=4Gi");
        assert_eq!(row("Labels"), "app=web");
        assert_eq!(row("Placement"), "guangdong on telecom, unicom, spread, at most 5 per IDC");
        assert_eq!(row("Deleted"), "-");
        assert!(
            text.ends_with(
                "\n\nSchedules:\n  #0  0 20 * * * → 0 23 * * * Asia/Shanghai: 6 (lead 600s)\n  \
                 #1  0 9 * * 1-5 → 0 18 * * 1-5 UTC: 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_new_group_shows_dashes_until_its_first_tick() {
        let new = json!({"id": "g-03", "name": "fresh", "state": "active", "generation": 1, "mode": "preview",
            "current": 0, "desired": 0, "reason": "", "decided_at": null, "active_window": null,
            "next_boundary": null, "metric": null, "conditions": [], "avoided_idcs": [],
            "template": {"spec": {"cpu": "500m", "memory": "1Gi", "gpu": 0}, "image": "app:1"},
            "placement": {"areas": [], "carriers": [], "carrier_per_idc": "one"},
            "min": 0, "max": 3, "schedules": [], "load": null, "created_at": "2025-03-01T10:00:00Z"});
        let text = render::one(OutputFormat::Table, new, "group", group_view).unwrap();
        for key in [
            "Reason",
            "Decided",
            "Active window",
            "Next boundary",
            "Metric",
            "Conditions",
            "Avoided IDCs",
            "Load",
        ] {
            assert!(text.contains(&format!("\n{key}:")), "no {key} in {text}");
            let line = text.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
            assert!(line.ends_with("  -"), "{line}");
        }
        assert!(!text.contains("Scale up"), "{text}");
        assert!(
            text.contains("\nPlacement:        anywhere on any carrier, one carrier per IDC\n"),
            "{text}"
        );
        assert!(text.ends_with("\n\nSchedules: none"), "{text}");
    }

    #[test]
    fn rules_say_which_policy_wins_or_that_the_direction_is_off() {
        let policy =
            |kind: &str, value, period_seconds| RatePolicy { kind: kind.into(), value, period_seconds };
        let min = Rules {
            stabilisation_seconds: None,
            policies: Some(vec![policy("instances", 2, 60), policy("percent", 10, 60)]),
            select: Some("min".into()),
        };
        assert_eq!(rules(&min), "the smaller of 2 instances per 60s, 10% per 60s");
        let off = Rules { select: Some("disabled".into()), ..Rules::default() };
        assert_eq!(rules(&off), "disabled");
        let custom = Load { metric: "custom".into(), target: 0.5, tolerance: None, ..Load::default() };
        assert_eq!(load(&custom), "custom target 0.5");
        assert_eq!(
            reading(&Reading { value: 120.0, reporting: 1, age_seconds: 0 }, false),
            "120 from 1 instance, 0s old"
        );
    }

    #[test]
    fn events_render_one_line_each() {
        let page = json!({"items": [
            {"id": "e-1", "at": "2025-03-01T10:00:00Z", "kind": "created", "current": 0, "desired": 0,
             "message": "group created", "details": {}},
            {"id": "e-2", "at": "2025-03-01T10:00:01Z", "kind": "scaled_out", "current": 4, "desired": 6,
             "message": "placed 4 of 6:\n  idc-gz-1 4", "details": {"placed": [{"idc_id": "idc-gz-1", "count": 4}]}}
        ], "next_cursor": null});
        let text = render::many(OutputFormat::Table, page, "events", event_table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("AT ") && lines[0].ends_with("KIND         CURRENT   DESIRED   MESSAGE"),
            "{text}"
        );
        assert!(lines[1].ends_with("   created            0         0   group created"), "{text}");
        assert!(
            lines[2].ends_with("   scaled_out         4         6   placed 4 of 6: idc-gz-1 4"),
            "{text}"
        );
        let none = render::many(OutputFormat::Table, json!({"items": []}), "events", event_table).unwrap();
        assert_eq!(none, "No events found.");
    }

    /// What the fake API was asked: method, path and query, and the body as JSON (null if none).
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>;

    /// An API on 127.0.0.1:0 that records every request and answers a few of the groups' routes
    /// as the real one shapes them.
    async fn fake_api() -> (Api, Seen) {
        use axum::Json;
        use axum::extract::State;
        use axum::http::{Method, StatusCode, Uri};

        async fn answer(
            State(seen): State<Seen>,
            method: Method,
            uri: Uri,
            body: String,
        ) -> (StatusCode, Json<Value>) {
            let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str()).to_string();
            let json = serde_json::from_str(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().push((method.to_string(), target.clone(), json));
            let event = |id: &str| {
                json!({"id": id, "at": "2025-03-01T10:00:00Z", "kind": "decided",
                                          "current": 0, "desired": 1, "message": id, "details": {}})
            };
            match (method.as_str(), target.as_str()) {
                ("POST", "/v1/groups") => (StatusCode::CREATED, Json(sample())),
                ("PATCH", "/v1/groups/g-01") => (StatusCode::OK, Json(sample())),
                ("GET", "/v1/groups/g-01/events") => {
                    (StatusCode::OK, Json(json!({"items": [event("e-1")], "next_cursor": "c-1"})))
                }
                ("GET", "/v1/groups/g-01/events?cursor=c-1") => {
                    (StatusCode::OK, Json(json!({"items": [event("e-2")], "next_cursor": null})))
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": {"code": "not_found", "message": "group `g-9` not found"}})),
                ),
            }
        }

        let seen = Seen::default();
        let app = axum::Router::new().fallback(answer).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Api::new(&endpoint, Some("t")).unwrap(), seen)
    }

    #[tokio::test]
    async fn create_and_patch_send_the_file_as_json_and_events_follow_the_cursors() {
        let (api, seen) = fake_api().await;
        let dir = std::env::temp_dir().join(format!("eci-group-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let create = dir.join("web.yaml");
        std::fs::write(&create, YAML).unwrap();
        let patch = dir.join("patch");
        std::fs::write(&patch, r#"{"generation": 3, "max": 20, "load": null}"#).unwrap();

        let text = run(&api, parsed(&["create", "-f", &create.display().to_string()]), OutputFormat::Table)
            .await
            .unwrap();
        assert!(text.starts_with("ID:               g-01\n"), "{text}");
        let text =
            run(&api, parsed(&["patch", "g-01", "-f", &patch.display().to_string()]), OutputFormat::Json)
                .await
                .unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), sample());
        let text = run(&api, parsed(&["events", "g-01", "--all"]), OutputFormat::Json).await.unwrap();
        let events: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(events["items"].as_array().map(Vec::len), Some(2), "{text}");
        assert_eq!(events["next_cursor"], Value::Null);

        let seen = seen.lock().unwrap().clone();
        let asked: Vec<(&str, &str)> = seen.iter().map(|(m, t, _)| (m.as_str(), t.as_str())).collect();
        assert_eq!(
            asked,
            [
                ("POST", "/v1/groups"),
                ("PATCH", "/v1/groups/g-01"),
                ("GET", "/v1/groups/g-01/events"),
                ("GET", "/v1/groups/g-01/events?cursor=c-1")
            ]
        );
        assert_eq!(seen[0].2["template"]["spec"], json!({"cpu": "2", "memory": "4Gi"}));
        assert_eq!(seen[0].2["schedules"][0]["start"], "0 20 * * *");
        assert_eq!(seen[1].2, json!({"generation": 3, "max": 20, "load": null}));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_api_error_is_one_line_and_a_bad_file_sends_nothing() {
        let (api, seen) = fake_api().await;
        let err = run(&api, parsed(&["cost", "g-9", "--instances"]), OutputFormat::Table).await.unwrap_err();
        assert_eq!(err.to_string(), "not_found: group `g-9` not found (HTTP 404)");
        assert_eq!(seen.lock().unwrap()[0].1, "/v1/groups/g-9/cost?instances=true");

        let missing = std::env::temp_dir().join(format!("eci-group-test-{}-none.json", std::process::id()));
        let argv = ["create", "-f", &missing.display().to_string()];
        let err = run(&api, parsed(&argv), OutputFormat::Table).await.unwrap_err().to_string();
        assert!(err.starts_with("cannot read "), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1, "nothing was sent for the bad file");
    }

    #[test]
    fn json_output_is_the_answer_itself() {
        let text = render::one(OutputFormat::Json, sample(), "group", group_view).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), sample());
    }
}
