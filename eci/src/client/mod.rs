//! The command-line client of the ECI API: `eci batch …`, `eci instance …`, `eci group …`,
//! `eci capacity`, `eci areas`, `eci usage`, `eci invoice …`, and for operators `eci admin idc …`.
//!
//! Layout: [`http`] is the only place that talks to the server (URLs, bearer token, timeouts,
//! turning failures into one readable line); one file per resource turns arguments into a request
//! and the answer into text; [`render`] holds the table and formatting helpers and [`parse`] the
//! argument parsers that several commands share; [`wait`] is `batch … --wait`, polling a batch
//! until its instances run. Every command returns the text to print, so that output happens in one
//! place and rendering stays testable without a server.

mod admin;
mod areas;
mod batch;
mod billing;
mod capacity;
mod group;
mod http;
mod instance;
mod parse;
mod render;
mod wait;

use std::io::Write;

pub use admin::AdminCommand;
pub use batch::BatchCommand;
pub use billing::{InvoiceCommand, UsageArgs};
pub use capacity::CapacityArgs;
pub use group::GroupCommand;
pub use instance::InstanceCommand;

/// Help section of the options every client subcommand takes, kept apart from the command's own.
const HEADING: &str = "Client options";

/// Where the API is, who we are, and how to print: shared by every client subcommand and
/// `global` so they may be written before or after it (`eci -o json batch list`,
/// `eci batch list -o json`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the ECI API server.
    #[arg(
        long,
        env = "ECI_ENDPOINT",
        default_value = "http://127.0.0.1:7070",
        global = true,
        help_heading = HEADING
    )]
    pub endpoint: String,

    /// API token, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "ECI_TOKEN", hide_env_values = true, global = true, help_heading = HEADING)]
    pub token: Option<String>,

    /// Output format: readable tables, or the API's JSON (pretty-printed).
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table, global = true, help_heading = HEADING)]
    pub output: OutputFormat,
}

/// How results are printed: tables for people, JSON for scripts (`-o json | jq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// The client subcommands, one per API resource; main flattens them into its own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create, list, inspect and release batches of instances.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// List, inspect and release single instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Autoscaled groups: create one from a file, watch its count and why, change or delete it.
    #[command(subcommand)]
    Group(GroupCommand),
    /// How many instances of a given size fit now, by location.
    Capacity(CapacityArgs),
    /// The areas (region > province > city) and carriers instances can be placed in.
    Areas,
    /// Usage and cost in a window (this month so far by default), optionally grouped.
    Usage(UsageArgs),
    /// Monthly invoices: list them, or show one (`--csv` for its lines as CSV).
    #[command(subcommand)]
    Invoice(InvoiceCommand),
    /// Watch the fleet, with an admin key: what each IDC's cluster offers and what it sells.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Risk control's audit log: every deletion asked for, by whom, how many, allowed or not, and
    /// why (a tenant sees its own; an admin sees all).
    Audit(admin::AuditArgs),
}

/// Runs one client subcommand against the API and prints its result to stdout.
///
/// On failure returns an error whose `Display` is a single line meant to be printed as
/// `error: {err}` (for example `insufficient_capacity: only 812 of 1000 instances fit (HTTP 422)`);
/// nothing is printed here in that case. The one exception is a `--wait` whose instances failed:
/// the batch is printed all the same, and the error's first line says how many failed, the lines
/// below it why.
pub async fn run(args: ClientArgs, cmd: ClientCommand) -> anyhow::Result<()> {
    let api = http::Api::new(&args.endpoint, args.token.as_deref())?;
    let output = args.output;
    let answer: Answer = match cmd {
        ClientCommand::Batch(cmd) => batch::run(&api, cmd, output).await?,
        ClientCommand::Instance(cmd) => instance::run(&api, cmd, output).await?.into(),
        ClientCommand::Group(cmd) => group::run(&api, cmd, output).await?.into(),
        ClientCommand::Capacity(cmd) => capacity::run(&api, cmd, output).await?.into(),
        ClientCommand::Areas => areas::run(&api, output).await?.into(),
        ClientCommand::Usage(cmd) => billing::usage(&api, cmd, output).await?.into(),
        ClientCommand::Invoice(cmd) => billing::invoice(&api, cmd, output).await?.into(),
        ClientCommand::Admin(cmd) => admin::run(&api, cmd, output).await?.into(),
        ClientCommand::Audit(args) => admin::audit(&api, args, output).await?.into(),
    };
    print_stdout(&answer.text)?;
    answer.verdict
}

/// What a command prints, and whether it failed all the same: `batch … --wait` prints the batch it
/// waited for even when the wait failed, so that a script still learns the id it has to clean up.
struct Answer {
    text: String,
    verdict: anyhow::Result<()>,
}

impl From<String> for Answer {
    fn from(text: String) -> Answer {
        Answer { text, verdict: Ok(()) }
    }
}

/// Writes `text` and a newline to stdout; a closed pipe (`eci batch list | head -1`) is not an
/// error worth reporting.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write output: {e}"))
        }
        _ => Ok(()),
    }
}

/// Prints a side note for people (more pages, partial placement) on stderr, keeping stdout to
/// the result itself.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}
