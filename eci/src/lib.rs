//! `eci`: the edge container instance platform's one binary, as a library so that the end-to-end
//! tests build the same program.
//!
//! `eci up` runs everything embedded (SQLite, the built-in fleet); `eci serve` runs the production
//! control plane; every other subcommand is a client of the API. [`main`] is the whole program.

mod client;
mod fleet_clusters;
mod server;
mod webhook;

use clap::{Parser, Subcommand};
use tracing::Level;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "eci",
    bin_name = "eci",
    version,
    about = "Edge container instances: ask by area and carrier, never by node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: client::ClientArgs,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ECI_LOG_JSON", global = true)]
    log_json: bool,
    /// Log more: `-v` what the platform does, `-vv` every step. `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform embedded: SQLite, the built-in fleet, the API on 127.0.0.1:7070.
    Up(server::UpArgs),
    /// Run the production control plane (PostgreSQL, Redis).
    Serve(server::ServeArgs),
    /// Print the ValidatingWebhookConfiguration a member cluster needs so that it asks the platform
    /// before deleting a live instance's objects (`| kubectl apply -f -`).
    WebhookManifest(webhook::ManifestArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Starts logging at `quiet` (raised one level per `-v`) unless `RUST_LOG` says otherwise.
fn init_logs(json: bool, quiet: Level, verbose: u8) {
    let level = match (quiet, verbose) {
        (level, 0) => level,
        (Level::WARN, 1) => Level::INFO,
        (Level::WARN | Level::INFO, _) => Level::DEBUG,
        (level, _) => level,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the program: parses the command line, runs the command, and exits non-zero with one line
/// on standard error when it fails.
#[tokio::main]
pub async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        // The embedded default is someone's terminal: warnings only, unless asked for more.
        Command::Up(args) => {
            init_logs(cli.log_json, Level::WARN, cli.verbose);
            server::up(args).await
        }
        Command::Serve(args) => {
            init_logs(cli.log_json, Level::INFO, cli.verbose);
            server::serve(args).await
        }
        Command::WebhookManifest(args) => webhook::print_manifest(&args),
        Command::Client(cmd) => client::run(cli.client, cmd).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
