//! `eci instance list|get|delete`: single instances, to find where they run, how to log in, and
//! to release one without touching the rest of its batch.

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use super::http::{Api, Query};
use super::render::{self, dash, finish, key_values, table, when};
use super::{OutputFormat, parse};

/// The `instance` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum InstanceCommand {
    /// List instances.
    List(InstanceListArgs),
    /// Show one instance: where it runs, its address and how to ssh into it.
    Get {
        /// Instance ID (i-…).
        id: String,
    },
    /// Release one instance.
    Delete {
        /// Instance ID (i-…).
        id: String,
        /// The number of instances it ends, when the platform asks for it to be confirmed (a
        /// deletion ending most of your instances, or very many).
        #[arg(long, value_name = "COUNT")]
        confirm: Option<u64>,
    },
}

/// Filters and paging of `instance list`.
#[derive(Debug, clap::Args)]
pub struct InstanceListArgs {
    /// Only instances of this batch.
    #[arg(long = "batch", value_name = "ID")]
    pub batch: Option<String>,
    /// Only instances in this state.
    #[arg(long, value_parser = parse::instance_states())]
    pub state: Option<String>,
    /// Only instances in this area (region, province or city code).
    #[arg(long, value_name = "CODE", value_parser = parse::area)]
    pub area: Option<String>,
    /// Only instances on this carrier.
    #[arg(long, value_name = "C", value_parser = parse::carriers())]
    pub carrier: Option<String>,
    /// Instances per page.
    #[arg(long, value_name = "N", value_parser = parse::positive::<u32>)]
    pub limit: Option<u32>,
    /// Follow the cursors and list every page.
    #[arg(long)]
    pub all: bool,
}

/// Runs one `instance` subcommand and returns the text to print.
pub async fn run(api: &Api, cmd: InstanceCommand, output: OutputFormat) -> Result<String> {
    match cmd {
        InstanceCommand::List(args) => {
            let answer = api.list(&["v1", "instances"], &list_query(&args), args.all).await?;
            render::many(output, answer, "instances", instance_table)
        }
        InstanceCommand::Get { id } => {
            let answer = api.get(&["v1", "instances", &id], &Vec::new()).await?;
            render::one(output, answer, "instance", instance_view)
        }
        InstanceCommand::Delete { id, confirm } => {
            let answer = api.delete(&["v1", "instances", &id], confirm).await?;
            render::one(output, answer, "instance", |i: &Instance| {
                format!("instance {} is {}", i.id, dash(i.state.as_deref()))
            })
        }
    }
}

/// The query of `GET /v1/instances`.
fn list_query(a: &InstanceListArgs) -> Query {
    let given = [
        ("batch_id", a.batch.clone()),
        ("state", a.state.clone()),
        ("area", a.area.clone()),
        ("carrier", a.carrier.clone()),
        ("limit", a.limit.map(|n| n.to_string())),
    ];
    given.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// The client's view of an instance; lenient like the batch's.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Instance {
    id: String,
    batch_id: Option<String>,
    state: Option<String>,
    spec: Value,
    runtime: Option<String>,
    region: Option<String>,
    province: Option<String>,
    city: Option<String>,
    carrier: Option<String>,
    idc: Option<String>,
    ip: Option<String>,
    ssh: Option<Ssh>,
    created_at: Option<String>,
    updated_at: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    failure_reason: Option<String>,
}

/// Where to ssh into a rich container or VM.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Ssh {
    host: String,
    port: Option<u16>,
    user: Option<String>,
}

impl Ssh {
    /// The command line to paste: `ssh root@host -p 22`.
    fn command(&self) -> String {
        let user = self.user.as_deref().filter(|u| !u.is_empty()).unwrap_or("root");
        format!("ssh {user}@{} -p {}", self.host, self.port.unwrap_or(22))
    }
}

fn instance_table(instances: &[Instance]) -> String {
    let mut t = table(&["ID", "STATE", "CITY", "CARRIER", "IP", "BATCH"], &[]);
    for i in instances {
        t.add_row([
            i.id.clone(),
            dash(i.state.as_deref()),
            dash(i.city.as_deref()),
            dash(i.carrier.as_deref()),
            dash(i.ip.as_deref()),
            dash(i.batch_id.as_deref()),
        ]);
    }
    finish(&t)
}

fn instance_view(i: &Instance) -> String {
    let area = [&i.region, &i.province, &i.city].map(|a| dash(a.as_deref())).join(" / ");
    let mut rows = vec![
        ("ID", i.id.clone()),
        ("Batch", dash(i.batch_id.as_deref())),
        ("State", dash(i.state.as_deref())),
        ("Spec", render::spec(&i.spec)),
        ("Runtime", dash(i.runtime.as_deref())),
        ("Area", area),
        ("Carrier", dash(i.carrier.as_deref())),
        ("IDC", dash(i.idc.as_deref())),
        ("IP", dash(i.ip.as_deref())),
        ("SSH", i.ssh.as_ref().filter(|s| !s.host.is_empty()).map_or_else(|| "-".to_string(), Ssh::command)),
        ("Created", when(i.created_at.as_deref())),
        ("Updated", when(i.updated_at.as_deref())),
        ("Started", when(i.started_at.as_deref())),
        ("Ended", when(i.ended_at.as_deref())),
    ];
    if let Some(reason) = i.failure_reason.as_deref().filter(|r| !r.is_empty()) {
        rows.push(("Failure", reason.to_string()));
    }
    key_values(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: InstanceCommand,
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_filters_become_query_parameters() {
        let argv =
            ["eci", "list", "--batch", "b-1", "--state", "running", "--carrier", "mobile", "--limit", "5"];
        let Cli { cmd: InstanceCommand::List(args) } = Cli::try_parse_from(argv).unwrap() else {
            panic!("not a list");
        };
        assert_eq!(
            list_query(&args),
            [
                ("batch_id", "b-1".into()),
                ("state", "running".into()),
                ("carrier", "mobile".into()),
                ("limit", "5".into())
            ]
        );
        assert!(Cli::try_parse_from(["eci", "list", "--state", "sleeping"]).is_err());
    }

    fn sample() -> Value {
        json!({
            "id": "i-01", "batch_id": "b-01", "state": "running",
            "spec": {"cpu": "2", "memory": "4Gi", "gpu": 0}, "runtime": "vm",
            "region": "south-china", "province": "guangdong", "city": "shenzhen", "carrier": "telecom",
            "idc": "idc-sz-1", "ip": "10.1.2.3", "ssh": {"host": "203.0.113.7", "port": 2201, "user": "root"},
            "created_at": "2025-03-01T10:00:00Z", "updated_at": "2025-03-01T10:01:00Z",
            "started_at": null, "ended_at": null, "failure_reason": null
        })
    }

    #[test]
    fn instances_render_as_a_table() {
        let pending = json!({"id": "i-02", "batch_id": "b-01", "state": "pending", "city": "guangzhou",
                             "carrier": "unicom", "ip": null, "ssh": null});
        let page = json!({"items": [sample(), pending], "next_cursor": null});
        let text = render::many(OutputFormat::Table, page, "instances", instance_table).unwrap();
        assert_eq!(
            text,
            "ID     STATE     CITY        CARRIER   IP         BATCH\n\
             i-01   running   shenzhen    telecom   10.1.2.3   b-01\n\
             i-02   pending   guangzhou   unicom    -          b-01"
        );
    }

    #[test]
    fn one_instance_shows_how_to_ssh_in() {
        let text = render::one(OutputFormat::Table, sample(), "instance", instance_view).unwrap();
        assert!(text.contains("\nArea:     south-china / guangdong / shenzhen\n"), "{text}");
        assert!(text.contains("\nSSH:      ssh root@203.0.113.7 -p 2201\n"), "{text}");
        assert!(text.contains("\nStarted:  -\n"), "{text}");
        assert!(!text.contains("Failure"), "{text}");

        let failed = json!({"id": "i-03", "state": "failed", "ssh": {"host": "h"}, "failure_reason": "image pull failed"});
        let text = render::one(OutputFormat::Table, failed, "instance", instance_view).unwrap();
        assert!(text.contains("\nSSH:      ssh root@h -p 22\n"), "{text}");
        assert!(text.ends_with("\nFailure:  image pull failed"), "{text}");
    }
}
