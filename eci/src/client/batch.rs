//! `eci batch create|list|get|delete`: batches are what customers ask for (N instances of one
//! size, placed by area and carrier), so this is the client's main entry point. `--wait` of create
//! and get lives in [`super::wait`].

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{Api, Query};
use super::render::{self, dash, finish, key_values, table, when};
use super::wait::{self, WaitArgs};
use super::{Answer, OutputFormat, note, parse};

/// The `batch` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BatchCommand {
    /// Ask for a batch of instances; the platform places them over edge IDCs.
    Create(Box<BatchCreateArgs>),
    /// List batches.
    List(BatchListArgs),
    /// Show one batch: its settings, where its instances were placed, and their states.
    Get {
        /// Batch ID (b-…).
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Release a batch: all its instances are stopped and its capacity freed.
    Delete {
        /// Batch ID (b-…).
        id: String,
        /// The number of instances it ends, when the platform asks for it to be confirmed (a
        /// deletion ending most of your instances, or very many).
        #[arg(long, value_name = "COUNT")]
        confirm: Option<u64>,
    },
}

/// What `batch create` asks for: the instance size and image, where to place them, and for how long.
#[derive(Debug, clap::Args)]
pub struct BatchCreateArgs {
    /// Number of instances.
    #[arg(long, value_parser = parse::positive::<u64>)]
    pub count: u64,
    /// CPU per instance, as a Kubernetes quantity: 2, 0.5, 500m.
    #[arg(long, value_parser = parse::cpu)]
    pub cpu: String,
    /// Memory per instance, as a Kubernetes quantity: 4Gi, 512Mi.
    #[arg(long, value_parser = parse::memory)]
    pub memory: String,
    /// GPUs per instance.
    #[arg(long, value_name = "N")]
    pub gpu: Option<u32>,
    /// Container image, e.g. nginx:1.27.
    #[arg(long)]
    pub image: String,
    /// Entrypoint, one word per flag: --command sh --command -c.
    #[arg(long = "command", value_name = "X", allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Argument to the entrypoint, one per flag.
    #[arg(long = "arg", value_name = "X", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse::key_value)]
    pub env: Vec<(String, String)>,
    /// Port to expose (repeatable).
    #[arg(long = "port", value_name = "N", value_parser = parse::positive::<u16>)]
    pub ports: Vec<u16>,
    /// How instances run: plain container, rich container, or VM.
    #[arg(long, value_parser = parse::runtimes())]
    pub runtime: Option<String>,
    /// SSH public key for rich containers and VMs, or @FILE to read keys from (repeatable).
    #[arg(long = "ssh-key", value_name = "KEY|@FILE")]
    pub ssh_keys: Vec<String>,
    /// Area code at any level (region, province or city), or * for anywhere (repeatable).
    #[arg(long = "area", value_name = "CODE", value_parser = parse::area)]
    pub areas: Vec<String>,
    /// Carrier the instances must be reachable on (repeatable; default: any).
    #[arg(long = "carrier", value_name = "C", value_parser = parse::carriers())]
    pub carriers: Vec<String>,
    /// spread: share over all matching IDCs; pack: fill as few IDCs as possible.
    #[arg(long, value_parser = ["spread", "pack"])]
    pub strategy: Option<String>,
    /// At most this many instances in any one IDC.
    #[arg(long, value_name = "N", value_parser = parse::positive::<u64>)]
    pub max_per_idc: Option<u64>,
    /// Place what fits instead of failing when not all instances fit.
    #[arg(long)]
    pub partial: bool,
    /// Draw the capacity from this reservation.
    #[arg(long = "reservation", value_name = "ID")]
    pub reservation: Option<String>,
    /// Release the batch automatically after this long: seconds, or 30m, 2h, 7d.
    #[arg(long = "ttl", value_name = "SECONDS", value_parser = parse::seconds)]
    pub ttl: Option<u64>,
    /// Fail an instance its cluster has not started within this long, with the cluster's reason
    /// (no node fits, the image cannot be pulled): seconds, or 90s, 10m, 1h; at most 1h, the
    /// platform's default when left out.
    #[arg(long = "create-timeout", value_name = "SECONDS", value_parser = parse::create_timeout)]
    pub create_timeout: Option<u32>,
    /// Label to attach (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = parse::key_value)]
    pub labels: Vec<(String, String)>,
    /// Retrying with the same key returns the first batch instead of creating another.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Filters and paging of `batch list`.
#[derive(Debug, clap::Args)]
pub struct BatchListArgs {
    /// Only batches in this state.
    #[arg(long, value_parser = parse::batch_states())]
    pub state: Option<String>,
    /// Only batches with this label.
    #[arg(long, value_name = "K=V", value_parser = parse::key_value)]
    pub label: Option<(String, String)>,
    /// Batches per page.
    #[arg(long, value_name = "N", value_parser = parse::positive::<u32>)]
    pub limit: Option<u32>,
    /// Follow the cursors and list every page.
    #[arg(long)]
    pub all: bool,
}

/// Runs one `batch` subcommand and returns the text to print, with the verdict of `--wait`.
pub async fn run(api: &Api, cmd: BatchCommand, output: OutputFormat) -> Result<Answer> {
    match cmd {
        BatchCommand::Create(args) => {
            let body = create_body(&args)?;
            let answer = api.post(&["v1", "batches"], &body, args.idempotency_key.as_deref()).await?;
            let (answer, verdict) = wait::if_asked(api, answer, &args.wait, output).await;
            let text = render::one(output, answer, "batch", |b: &Batch| {
                if b.count < args.count {
                    note(&format!("note: placed {} of the {} instances asked for", b.count, args.count));
                }
                batch_view(b)
            })?;
            Ok(Answer { text, verdict })
        }
        BatchCommand::List(args) => {
            let answer = api.list(&["v1", "batches"], &list_query(&args), args.all).await?;
            render::many(output, answer, "batches", batch_table).map(Answer::from)
        }
        BatchCommand::Get { id, wait } => {
            let answer = api.get(&["v1", "batches", &id], &Vec::new()).await?;
            let (answer, verdict) = wait::if_asked(api, answer, &wait, output).await;
            Ok(Answer { text: render::one(output, answer, "batch", batch_view)?, verdict })
        }
        BatchCommand::Delete { id, confirm } => {
            let answer = api.delete(&["v1", "batches", &id], confirm).await?;
            render::one(output, answer, "batch", |b: &Batch| {
                format!("batch {} is {}", b.id, dash(b.state.as_deref()))
            })
            .map(Answer::from)
        }
    }
}

/// The body of `POST /v1/batches`. Fields the user did not give are left out, so the server's
/// defaults apply; `all_or_nothing` is always sent since `--partial` is its only switch.
#[derive(Debug, Serialize)]
struct CreateBody<'a> {
    count: u64,
    spec: SpecBody<'a>,
    image: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    command: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    args: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ports: &'a [u16],
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ssh_keys: Vec<String>,
    placement: PlacementBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_timeout_seconds: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct SpecBody<'a> {
    cpu: &'a str,
    memory: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu: Option<u32>,
}

#[derive(Debug, Serialize)]
struct PlacementBody<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    areas: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    carriers: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_idc: Option<u64>,
    all_or_nothing: bool,
}

/// Builds the create request from the flags; reads `@FILE` ssh keys and refuses duplicate keys.
fn create_body(a: &BatchCreateArgs) -> Result<Value> {
    let body = CreateBody {
        count: a.count,
        spec: SpecBody { cpu: &a.cpu, memory: &a.memory, gpu: a.gpu },
        image: &a.image,
        command: &a.command,
        args: &a.args,
        env: parse::into_map(&a.env, "--env")?,
        ports: &a.ports,
        runtime: a.runtime.as_deref(),
        ssh_keys: parse::ssh_keys(&a.ssh_keys)?,
        placement: PlacementBody {
            areas: &a.areas,
            carriers: &a.carriers,
            strategy: a.strategy.as_deref(),
            max_per_idc: a.max_per_idc,
            all_or_nothing: !a.partial,
        },
        reservation_id: a.reservation.as_deref(),
        ttl_seconds: a.ttl,
        create_timeout_seconds: a.create_timeout,
        labels: parse::into_map(&a.labels, "--label")?,
    };
    Ok(serde_json::to_value(body)?)
}

/// The query of `GET /v1/batches`.
fn list_query(a: &BatchListArgs) -> Query {
    let mut q = Query::new();
    if let Some(state) = &a.state {
        q.push(("state", state.clone()));
    }
    if let Some((k, v)) = &a.label {
        q.push(("label", format!("{k}={v}")));
    }
    if let Some(limit) = a.limit {
        q.push(("limit", limit.to_string()));
    }
    q
}

/// The client's view of a batch; lenient (`default`) so that a field the server adds or leaves
/// out does not break the table.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Batch {
    id: String,
    state: Option<String>,
    count: u64,
    /// What was asked for; above `count` only after a partial placement.
    requested: Option<u64>,
    counts: BTreeMap<String, u64>,
    /// Its failed instances by reason, most common first as the server orders them.
    failures: Vec<Failure>,
    spec: Value,
    runtime: Option<String>,
    image: Option<String>,
    placement: Vec<Placed>,
    labels: BTreeMap<String, String>,
    reservation_id: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
    released_at: Option<String>,
}

/// How many instances of a batch went to one city and carrier.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Placed {
    region: Option<String>,
    province: Option<String>,
    city: Option<String>,
    carrier: Option<String>,
    count: u64,
}

/// How many of a batch's instances failed for one reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Failure {
    reason: String,
    count: u64,
}

impl Batch {
    fn count_in(&self, state: &str) -> u64 {
        self.counts.get(state).copied().unwrap_or(0)
    }
}

fn batch_table(batches: &[Batch]) -> String {
    let mut t =
        table(&["ID", "STATE", "COUNT", "RUNNING", "PENDING", "RUNTIME", "CREATED", "EXPIRES"], &[2, 3, 4]);
    for b in batches {
        t.add_row([
            b.id.clone(),
            dash(b.state.as_deref()),
            b.count.to_string(),
            b.count_in("running").to_string(),
            b.count_in("pending").to_string(),
            dash(b.runtime.as_deref()),
            when(b.created_at.as_deref()),
            when(b.expires_at.as_deref()),
        ]);
    }
    finish(&t)
}

fn batch_view(b: &Batch) -> String {
    let count = match b.requested {
        Some(asked) if asked != b.count => format!("{} (of {asked} requested)", b.count),
        _ => b.count.to_string(),
    };
    let header = key_values(&[
        ("ID", b.id.clone()),
        ("State", dash(b.state.as_deref())),
        ("Count", count),
        ("Spec", render::spec(&b.spec)),
        ("Runtime", dash(b.runtime.as_deref())),
        ("Image", dash(b.image.as_deref())),
        ("Labels", render::labels(&b.labels)),
        ("Reservation", dash(b.reservation_id.as_deref())),
        ("Created", when(b.created_at.as_deref())),
        ("Expires", when(b.expires_at.as_deref())),
        ("Released", when(b.released_at.as_deref())),
    ]);
    let placement = if b.placement.is_empty() {
        "Placement: none".to_string()
    } else {
        let mut t = table(&["REGION", "PROVINCE", "CITY", "CARRIER", "COUNT"], &[4]);
        for p in &b.placement {
            t.add_row([
                dash(p.region.as_deref()),
                dash(p.province.as_deref()),
                dash(p.city.as_deref()),
                dash(p.carrier.as_deref()),
                p.count.to_string(),
            ]);
        }
        format!("Placement:\n{}", finish(&t))
    };
    let instances = format!("Instances: {}", counts(&b.counts));
    if b.failures.is_empty() {
        return format!("{header}\n\n{placement}\n\n{instances}");
    }
    // One line per reason, whatever the cluster's message spans, as `--wait` reports them.
    let failures: Vec<String> = b
        .failures
        .iter()
        .map(|f| format!("  {} × {}", f.count, f.reason.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    format!("{header}\n\n{placement}\n\n{instances}\n\nFailed:\n{}", failures.join("\n"))
}

/// Instance counts by state in lifecycle order (`pending 880, running 120`), then any state this
/// client does not know yet.
pub(super) fn counts(counts: &BTreeMap<String, u64>) -> String {
    let known: Vec<&str> = eci_core::InstanceState::ALL.iter().map(|s| s.as_str()).collect();
    let ordered =
        known.iter().copied().chain(counts.keys().map(String::as_str).filter(|k| !known.contains(k)));
    let parts: Vec<String> =
        ordered.filter_map(|state| counts.get(state).map(|n| format!("{state} {n}"))).collect();
    if parts.is_empty() { "-".to_string() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BatchCommand,
    }

    fn create_args(flags: &[&str]) -> BatchCreateArgs {
        let argv = ["eci", "create"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().cmd {
            BatchCommand::Create(args) => *args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_minimal_create_leaves_optional_fields_out() {
        let args = create_args(&["--count", "3", "--cpu", "2", "--memory", "4Gi", "--image", "nginx"]);
        assert_eq!(
            create_body(&args).unwrap(),
            json!({
                "count": 3,
                "spec": {"cpu": "2", "memory": "4Gi"},
                "image": "nginx",
                "placement": {"all_or_nothing": true},
            })
        );
    }

    #[test]
    fn a_full_create_maps_every_flag() {
        let args = create_args(&[
            "--count",
            "1000",
            "--cpu",
            "500m",
            "--memory",
            "512Mi",
            "--gpu",
            "1",
            "--image",
            "app:1",
            "--command",
            "sh",
            "--command",
            "-c",
            "--arg",
            "echo hi",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--port",
            "80",
            "--port",
            "443",
            "--runtime",
            "vm",
            "--ssh-key",
            "ssh-ed25519 AAAA me",
            "--area",
            "guangdong",
            "--area",
            "Shenzhen",
            "--carrier",
            "telecom",
            "--carrier",
            "bgp",
            "--strategy",
            "pack",
            "--max-per-idc",
            "50",
            "--partial",
            "--reservation",
            "r-1",
            "--ttl",
            "2h",
            "--create-timeout",
            "5m",
            "--label",
            "team=edge",
            "--idempotency-key",
            "k1",
        ]);
        assert_eq!(args.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(
            create_body(&args).unwrap(),
            json!({
                "count": 1000,
                "spec": {"cpu": "500m", "memory": "512Mi", "gpu": 1},
                "image": "app:1",
                "command": ["sh", "-c"],
                "args": ["echo hi"],
                "env": {"A": "1", "B": "x=y"},
                "ports": [80, 443],
                "runtime": "vm",
                "ssh_keys": ["ssh-ed25519 AAAA me"],
                "placement": {
                    "areas": ["guangdong", "shenzhen"],
                    "carriers": ["telecom", "bgp"],
                    "strategy": "pack",
                    "max_per_idc": 50,
                    "all_or_nothing": false,
                },
                "reservation_id": "r-1",
                "ttl_seconds": 7200,
                "create_timeout_seconds": 300,
                "labels": {"team": "edge"},
            })
        );
    }

    #[test]
    fn bad_flags_are_refused_before_any_request() {
        let base = ["eci", "create", "--count", "1", "--memory", "4Gi", "--image", "x"];
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(base.iter().chain(extra)).map(|_| ()).unwrap_err().to_string()
        };
        assert!(parse(&["--cpu", "2Gi"]).contains("is not a Kubernetes quantity"));
        assert!(
            parse(&["--cpu", "2", "--carrier", "cmcc"])
                .contains("possible values: telecom, unicom, mobile, bgp")
        );
        assert!(parse(&["--cpu", "2", "--env", "NOEQUALS"]).contains("is not KEY=VALUE"));
        let zero = Cli::try_parse_from([
            "eci", "create", "--count", "0", "--cpu", "1", "--memory", "1Gi", "--image", "x",
        ]);
        assert!(zero.unwrap_err().to_string().contains("must be at least 1"));
        let dup = create_args(&[
            "--count", "1", "--cpu", "2", "--memory", "1Gi", "--image", "x", "--env", "A=1", "--env", "A=2",
        ]);
        assert_eq!(create_body(&dup).unwrap_err().to_string(), "--env `A` is given twice");
    }

    #[test]
    fn list_filters_become_query_parameters() {
        let Cli { cmd: BatchCommand::List(args) } = Cli::try_parse_from([
            "eci", "list", "--state", "active", "--label", "app=web", "--limit", "20", "--all",
        ])
        .unwrap() else {
            panic!("not a list");
        };
        assert!(args.all);
        let q = list_query(&args);
        assert_eq!(q, [("state", "active".into()), ("label", "app=web".into()), ("limit", "20".into())]);
    }

    fn sample() -> Value {
        json!({
            "id": "b-01", "state": "active", "count": 1000,
            "counts": {"running": 120, "pending": 880, "failed": 0},
            "spec": {"cpu": "2", "memory": "4Gi", "gpu": 0}, "runtime": "container", "image": "nginx",
            "placement": [
                {"region": "south-china", "province": "guangdong", "city": "shenzhen", "carrier": "telecom", "count": 120},
                {"region": "south-china", "province": "guangdong", "city": "guangzhou", "carrier": "unicom", "count": 880}
            ],
            "labels": {"team": "edge"}, "reservation_id": null,
            "created_at": "2025-03-01T10:00:00Z", "expires_at": null, "released_at": null
        })
    }

    #[test]
    fn batches_render_as_a_table() {
        let page = json!({"items": [sample()], "next_cursor": null});
        let text = render::many(OutputFormat::Table, page, "batches", batch_table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("ID     STATE    COUNT   RUNNING   PENDING   RUNTIME     CREATED"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("b-01   active    1000       120       880   container   2025-03-01 "),
            "{text}"
        );
        assert!(lines[1].ends_with(" -"), "{text}");
        let empty = render::many(OutputFormat::Table, json!({"items": []}), "batches", batch_table).unwrap();
        assert_eq!(empty, "No batches found.");
    }

    #[test]
    fn one_batch_renders_with_its_placement_and_counts() {
        let text = render::one(OutputFormat::Table, sample(), "batch", batch_view).unwrap();
        assert!(text.starts_with("ID:           b-01\nState:        active\nCount:        1000\n"), "{text}");
        assert!(text.contains("\nSpec:         cpu=2 memory=4Gi\n"), "{text}");
        assert!(text.contains("\nLabels:       team=edge\n"), "{text}");
        assert!(
            text.contains(
                "Placement:\nREGION        PROVINCE    CITY        CARRIER   COUNT\n\
             south-china   guangdong   shenzhen    telecom     120\n\
             south-china   guangdong   guangzhou   unicom      880\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("\n\nInstances: pending 880, running 120, failed 0"), "{text}");
    }

    #[test]
    fn a_batch_with_failed_instances_says_why_they_failed() {
        let mut failing = sample();
        failing["counts"]["failed"] = json!(3);
        failing["failures"] = json!([
            {"reason": "Unschedulable: 0/2 nodes are available:\n  2 Insufficient cpu", "count": 2},
            {"reason": "ErrImagePull", "count": 1},
        ]);
        let text = render::one(OutputFormat::Table, failing, "batch", batch_view).unwrap();
        assert!(
            text.ends_with(
                "\n\nInstances: pending 880, running 120, failed 3\n\nFailed:\n  \
                 2 × Unschedulable: 0/2 nodes are available: 2 Insufficient cpu\n  \
                 1 × ErrImagePull"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_partial_batch_shows_what_was_asked_for() {
        let mut partial = sample();
        partial["requested"] = json!(1200);
        let text = render::one(OutputFormat::Table, partial, "batch", batch_view).unwrap();
        assert!(text.contains("\nCount:        1000 (of 1200 requested)\n"), "{text}");
    }

    #[test]
    fn json_output_is_the_answer_itself() {
        let text = render::one(OutputFormat::Json, sample(), "batch", batch_view).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), sample());
        assert!(text.contains("\n  \"id\": \"b-01\""));
    }

    #[test]
    fn unknown_states_are_listed_after_known_ones() {
        let c = BTreeMap::from([
            ("zombie".to_string(), 1),
            ("running".to_string(), 2),
            ("creating".to_string(), 3),
        ]);
        assert_eq!(counts(&c), "creating 3, running 2, zombie 1");
        assert_eq!(counts(&BTreeMap::new()), "-");
    }
}
