//! `yuyo-bench-attack`: what two cheap unauthenticated attacks do to an interactions
//! endpoint, measured as Discord would notice it.
//!
//! While many attacking connections from one client hold the server (pipelined requests
//! whose answers are never read, or signed POST heads whose body never comes), a fresh
//! client sends one signed PING per second, each on a new connection with a deadline, and
//! the tool prints one `key=value` line: how many PINGs were answered (200 `{"type":1}`),
//! their p50 and p99 latency, and how many attacking connections the server closed.
//! `bench/attack.sh` runs it against every adapter and the hyper baseline.
//!
//! Only loopback addresses are accepted: this is a load tool for a server on this machine.

#![deny(missing_docs)]

mod attack;
mod fresh;
mod procnet;
mod request;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ed25519_dalek::SigningKey;
use tokio::time::Instant;

use crate::attack::{Attack, Plan, Summary};
use crate::fresh::Pings;

/// Which attack the attacking connections make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttackKind {
    /// Attack A: a 4 KiB receive buffer and a 1,460-byte MSS, then thousands of pipelined
    /// GETs, never reading an answer.
    PipelineNoRead,
    /// Attack B: a validly signed POST head announcing a 1,000-byte body, then nothing.
    StalledBody,
    /// No attack: the fresh client alone (a control run).
    None,
}

/// Arguments.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server (a loopback address).
    #[arg(long, default_value = "127.0.0.1:18091")]
    addr: SocketAddr,
    /// The attack.
    #[arg(long, value_enum)]
    attack: AttackKind,
    /// Attacking connections, all from this one client.
    #[arg(long, default_value_t = 1100)]
    connections: usize,
    /// Seconds of fresh-client PINGs (one per second) while the attack holds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Pipelined requests per connection (pipeline-no-read).
    #[arg(long, default_value_t = 4000)]
    pipeline: usize,
    /// Seconds each fresh PING may take, connect included.
    #[arg(long, default_value_t = 2.0)]
    ping_timeout: f64,
    /// Seconds each attacking connect may take.
    #[arg(long, default_value_t = 3.0)]
    connect_timeout: f64,
    /// Seconds between the attack's connects and the first PING.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// The server's name in the output line.
    #[arg(long, default_value = "server")]
    label: String,
    /// The Ed25519 secret seed (64 hex digits); default: the fixtures' test key.
    #[arg(long)]
    secret_key: Option<String>,
}

/// Seconds from the command line as a `Duration`.
fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{name}: {e}"))
}

/// Refuses what this tool must not do: other hosts, more sockets than fds.
fn check(args: &Args) -> Result<(), String> {
    if !args.addr.ip().is_loopback() || !args.addr.is_ipv4() {
        return Err(format!("{}: only IPv4 loopback addresses", args.addr));
    }
    let needed = u64::try_from(args.connections)
        .unwrap_or(u64::MAX)
        .saturating_add(64);
    match procnet::open_files_limit() {
        Some(limit) if limit < needed => Err(format!(
            "open files limit {limit} < {needed}: raise it first (ulimit -n {needed})"
        )),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("yuyo-bench-attack: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the attack and the fresh client; returns the result line.
fn run(args: &Args) -> Result<String, String> {
    check(args)?;
    let key = match &args.secret_key {
        Some(hex) => request::parse_seed(hex)?,
        None => SigningKey::from_bytes(&request::TEST_SECRET_SEED),
    };
    let plan = Plan {
        kind: args.attack,
        addr: args.addr,
        connections: args.connections,
        pipeline: args.pipeline,
        connect_timeout: seconds("connect-timeout", args.connect_timeout)?,
    };
    let ping_timeout = seconds("ping-timeout", args.ping_timeout)?;
    let settle = seconds("settle", args.settle)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let (pings, summary) = runtime.block_on(async {
        let mut attack = attack::open(&plan, &key).await;
        eprintln!(
            "{} {:?}: {} attacking connections established",
            args.label,
            args.attack,
            attack.connected()
        );
        tokio::time::sleep(settle).await;
        let pings = fresh_client(&mut attack, args, Arc::new(key), ping_timeout).await;
        (pings, attack.stop(Duration::from_secs(5)).await)
    });
    Ok(result_line(args, &pings, &summary))
}

/// One PING per second for the run's duration, each on its own blocking thread and new
/// connection, while `attack` holds; notes the connections the server closed meanwhile.
async fn fresh_client(
    attack: &mut Attack,
    args: &Args,
    key: Arc<SigningKey>,
    timeout: Duration,
) -> Pings {
    let start = Instant::now();
    let mut running = Vec::new();
    for second in 0..args.duration {
        tokio::time::sleep_until(start + Duration::from_secs(second)).await;
        attack.scan(start.elapsed().as_secs_f64());
        let key = Arc::clone(&key);
        let addr = args.addr;
        running.push(tokio::task::spawn_blocking(move || {
            fresh::ping(addr, &key, timeout)
        }));
    }
    tokio::time::sleep_until(start + Duration::from_secs(args.duration)).await;
    let mut pings = Pings::default();
    for ping in running {
        // Each PING ends within its timeout; a panicked one counts as a failure.
        pings.add(ping.await.unwrap_or_else(|_| Err("panic".to_owned())));
    }
    attack.scan(start.elapsed().as_secs_f64());
    pings
}

/// `a:1,b:2`, or `-` for none.
fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    parts.join(",")
}

/// `1.23`, or `-` for none.
fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The machine-readable result: `key=value` pairs separated by spaces.
fn result_line(args: &Args, pings: &Pings, summary: &Summary) -> String {
    let attack = args
        .attack
        .to_possible_value()
        .map_or_else(|| format!("{:?}", args.attack), |v| v.get_name().to_owned());
    let mut line = format!("result server={} attack={attack}", args.label);
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        " connections={} connected={} connect_errors={} pings={} answered={} p50_ms={} \
         p99_ms={} max_ms={} ping_errors={} closed={} closed_first_s={} closed_last_s={} \
         written_avg_bytes={} fully_written={} scan_errors={}",
        args.connections,
        summary.connected,
        counts(&summary.connect_errors),
        pings.total,
        pings.answered.len(),
        ms(pings.percentile_ms(50.0)),
        ms(pings.percentile_ms(99.0)),
        ms(pings.percentile_ms(100.0)),
        counts(&pings.errors),
        summary.closed,
        summary
            .closed_span
            .map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s.0)),
        summary
            .closed_span
            .map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s.1)),
        summary.written_avg,
        summary.done_writing,
        summary.scan_errors,
    );
    line
}
