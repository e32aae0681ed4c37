//! The `yuyo` command: serve a demo interactions endpoint, check an endpoint the way
//! Discord does when its URL is saved, and sign requests to try an endpoint with curl.
//!
//! ```text
//! yuyo serve [--bind 127.0.0.1:8080] [--runtime smol|tokio|blocking|tower] [--public-key HEX]
//!            [--tls-cert PEM --tls-key PEM] [--events-path /events] [--insecure-demo-key]
//! yuyo check URL [--secret-key HEX] [--public-key HEX] [--ca PEM] [--events]
//! yuyo register URL --token T [--events-url URL [--event-type TYPE]…]
//! yuyo commands sync FILE.json --token T [--guild ID]
//! yuyo commands list --token T [--guild ID]
//! yuyo sign [--secret-key HEX] [--timestamp T] [--url URL] (--body JSON | --file PATH)
//! ```
#![deny(missing_docs)]

mod check;
mod client;
mod commands;
mod discord;
mod exporter;
mod keys;
mod listen;
mod register;
mod serve;
mod sign;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Discord HTTP interactions: a demo server, an endpoint checker and a request signer.
#[derive(Debug, Parser)]
#[command(name = "yuyo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the demo interactions endpoint (commands echo, ephemeral, defer, file, none,
    /// boom; autocomplete; buttons; modals) until Ctrl-C / SIGTERM.
    Serve(ServeArgs),
    /// Probe an endpoint like Discord does when its interactions endpoint URL is saved,
    /// each probe within 3 s: unsigned and badly signed requests must get 401, a signed
    /// PING (with --secret-key) 200 {"type":1}; https certificates must be valid.
    Check(CheckArgs),
    /// Set the application's interactions endpoint URL (and event webhooks URL): Discord
    /// verifies it first, as when it is saved in the Developer Portal.
    Register(RegisterArgs),
    /// Deploy application commands from a JSON file, or list the deployed ones.
    #[command(subcommand)]
    Commands(CommandsCommand),
    /// Print the signature headers for a request body (and a curl command using them).
    Sign(SignArgs),
}

/// `yuyo commands …`.
#[derive(Debug, Subcommand)]
enum CommandsCommand {
    /// Overwrite the application's commands (global, or a guild's) with those of a JSON
    /// file (an array of Discord's command objects), checked first; nothing is sent when
    /// Discord already has exactly these.
    Sync(CommandsSyncArgs),
    /// List the application's commands (global, or a guild's).
    List(CommandsListArgs),
}

/// How to reach Discord's REST API.
#[derive(Debug, clap::Args)]
struct DiscordArgs {
    /// The bot token (Developer Portal → Bot); also read from `DISCORD_TOKEN`.
    #[arg(long, env = "DISCORD_TOKEN", hide_env_values = true)]
    token: String,
    /// Discord's REST API base URL (for tests against a mock).
    #[arg(long, value_name = "URL", default_value = discord::DISCORD_API, hide = true)]
    rest_url: String,
}

/// Arguments of `yuyo register`.
#[derive(Debug, clap::Args)]
struct RegisterArgs {
    /// The interactions endpoint URL (https://…).
    url: String,
    /// Also set (and enable) the event webhooks URL.
    #[arg(long, value_name = "URL")]
    events_url: Option<String>,
    /// An event type to receive there (repeatable), e.g. APPLICATION_AUTHORIZED,
    /// ENTITLEMENT_CREATE; none: the types already chosen stay.
    #[arg(long = "event-type", value_name = "TYPE", requires = "events_url")]
    event_types: Vec<String>,
    #[command(flatten)]
    discord: DiscordArgs,
}

/// Arguments of `yuyo commands sync`.
#[derive(Debug, clap::Args)]
struct CommandsSyncArgs {
    /// A JSON file holding an array of commands.
    file: PathBuf,
    /// Sync this guild's commands instead of the global ones.
    #[arg(long, value_name = "ID")]
    guild: Option<u64>,
    #[command(flatten)]
    discord: DiscordArgs,
}

/// Arguments of `yuyo commands list`.
#[derive(Debug, clap::Args)]
struct CommandsListArgs {
    /// List this guild's commands instead of the global ones.
    #[arg(long, value_name = "ID")]
    guild: Option<u64>,
    #[command(flatten)]
    discord: DiscordArgs,
}

/// Which runtime adapter serves the demo endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// `yuyo-smol`: async-io sockets on a smol executor, one thread per core.
    Smol,
    /// `yuyo-tokio`: a multi-threaded tokio runtime.
    Tokio,
    /// `yuyo-blocking`: std threads, no async runtime.
    Blocking,
    /// `yuyo-tower`: the tower service, served by hyper on tokio.
    Tower,
}

/// Arguments of `yuyo serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Runtime adapter to serve with.
    #[arg(long, value_enum, default_value_t = Runtime::Smol)]
    runtime: Runtime,
    /// Your application's public key (64 hex digits); default: the built-in demo key.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs `--tls-key`.
    /// `SIGHUP` re-reads both files (a renewed certificate) without dropping connections.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Path of the Webhook Events endpoint (the demo handler logs each event);
    /// `--events-path none` turns it off.
    #[arg(long, value_name = "PATH", default_value = "/events")]
    events_path: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port; the
    /// bound address is printed after the listening line).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the built-in demo key on a non-loopback address anyway (its secret key is
    /// public: anyone who reaches the endpoint can sign requests it accepts).
    #[arg(long)]
    insecure_demo_key: bool,
    /// Serve the listening socket systemd passed (socket activation: `LISTEN_FDS`, the
    /// `INDEX`th socket, default the first) instead of binding `--bind`. systemd keeps it
    /// open across restarts, so connections made meanwhile wait in its backlog.
    #[arg(long, value_name = "INDEX", num_args = 0..=1, default_missing_value = "0", conflicts_with = "reuse_port")]
    listen_fd: Option<usize>,
    /// Bind `--bind` with `SO_REUSEPORT` and take every new connection from an older
    /// `yuyo serve --reuse-port` on the same address (a handover without systemd: start
    /// the new process, wait for its `listening on` line, then stop the old one).
    #[arg(long)]
    reuse_port: bool,
    /// Seconds to go on serving after SIGTERM while the health check answers 503, before
    /// accepting stops (the time a load balancer needs to notice).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0, value_parser = parse_seconds)]
    drain_period: f64,
    /// Path of the health check (`GET` → 200, 503 once shutdown began); `none` turns it off.
    #[arg(long, value_name = "PATH", default_value = yuyo_core::endpoint::DEFAULT_HEALTH_PATH)]
    health_path: String,
}

/// A non-negative, finite number of seconds, at most a day.
fn parse_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{value:?} is not a number of seconds from 0 to 86400"
        )),
    }
}

/// Arguments of `yuyo check`.
#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The interactions endpoint URL (https://…, or http:// for the server behind a TLS
    /// proxy).
    url: String,
    /// A test secret key (32-byte seed as 64 hex digits) the endpoint is configured with
    /// (its public key): the signed PING is checked only with it.
    #[arg(long, value_name = "HEX")]
    secret_key: Option<String>,
    /// The public key the endpoint is configured with; checked against --secret-key.
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
    /// Trust only the CA certificates of this PEM file (a private CA) instead of the
    /// public CAs Discord trusts.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Check an event webhooks URL (signed PING → 204) instead of an interactions
    /// endpoint.
    #[arg(long)]
    events: bool,
    /// How long each probe may take, in milliseconds (Discord: 3000; for tests).
    #[arg(long, value_name = "MS", default_value_t = 3000, hide = true)]
    deadline_ms: u64,
}

/// Arguments of `yuyo sign`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["body", "file"])))]
struct SignArgs {
    /// The secret key (32-byte seed as 64 hex digits); default: the demo key.
    #[arg(long, value_name = "HEX")]
    secret_key: Option<String>,
    /// The `X-Signature-Timestamp` to sign with; default: the current Unix time.
    #[arg(long, value_name = "T")]
    timestamp: Option<String>,
    /// The request body to sign.
    #[arg(long, value_name = "JSON")]
    body: Option<String>,
    /// A file holding the request body to sign.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// The endpoint URL used in the printed curl command.
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    url: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Register(args) => register::run(&args),
        Command::Commands(CommandsCommand::Sync(args)) => commands::sync(&args),
        Command::Commands(CommandsCommand::List(args)) => commands::list(&args),
        Command::Sign(args) => sign::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Unix time now, in seconds, as the timestamp header value.
fn unix_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string()
}

/// `text` quoted for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
