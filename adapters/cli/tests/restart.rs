//! Restarting `yuyo serve` under a steady load of signed requests: with systemd socket
//! activation (`--listen-fd`) and with the `SO_REUSEPORT` handover (`--reuse-port`) no
//! request fails and no connection is refused; a plain restart (stop, then start on the
//! same port) refuses the connections made in between, which is what the two prevent.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use common::{BOUND, Guard, YUYO, start_serving};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use yuyo_conformance::demo::{DEMO_SECRET_SEED, sign};

/// Connections the load keeps in flight at once.
const WORKERS: usize = 4;
/// Requests each phase of a restart waits to see answered.
const PER_PHASE: usize = 100;
const PING: &str = r#"{"type":1}"#;

/// What the load saw.
#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
}

/// Signed PINGs, each on a new connection, from `WORKERS` threads until dropped.
struct Load {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..WORKERS)
            .map(|_| {
                let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let counter = match ping(addr) {
                            Ok(()) => &counts.ok,
                            Err(e) if e.kind() == ErrorKind::ConnectionRefused => &counts.refused,
                            Err(_) => &counts.failed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        // A steady rate, not a flood: the restarting process needs a core.
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            counts,
            stop,
            workers,
        }
    }

    fn ok(&self) -> usize {
        self.counts.ok.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `more` further requests were answered.
    fn wait_for_answers(&self, more: usize) {
        let target = self.ok() + more;
        wait_until(|| self.ok() >= target, "answered requests");
    }

    /// Stops the load and returns (answered, refused, failed).
    fn finish(mut self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            worker.join().expect("a load worker");
        }
        let counts = &self.counts;
        (
            counts.ok.load(Ordering::Relaxed),
            counts.refused.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Polls `done` until it holds, at most `BOUND`.
fn wait_until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {BOUND:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// One signed PING on a new connection: `Ok` for 200 `{"type":1}`.
fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let timestamp = "1700000000";
    let signature = sign(&DEMO_SECRET_SEED, timestamp, PING.as_bytes());
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n\
         X-Signature-Ed25519: {signature}\r\nX-Signature-Timestamp: {timestamp}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{PING}",
        PING.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    if response.starts_with("HTTP/1.1 200 ") && response.ends_with(PING) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer {response:?}"
        )))
    }
}

/// Spawns `command` and waits (bounded) for its `listening on` line: the address.
fn start(command: Command) -> (Guard, SocketAddr) {
    let (guard, addr, _lines) = start_serving(command);
    (guard, addr)
}

fn serve(runtime: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(YUYO);
    command.args(["serve", "--runtime", runtime]).args(extra);
    command
}

/// `yuyo serve --listen-fd` on `listener`, passed as systemd does (fd 3, `LISTEN_FDS=1`).
fn activated(runtime: &str, listener: &TcpListener) -> (Guard, SocketAddr) {
    let fd = OwnedFd::from(listener.try_clone().expect("a copy of the listener"));
    let mut command = serve(runtime, &["--listen-fd"]);
    command.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])
        .expect("fd 3 for the child");
    start(command)
}

/// SIGTERM, then waits (bounded) for a clean exit.
fn stop(mut server: Guard) {
    let pid = i32::try_from(server.0.id()).expect("a pid");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    assert!(server.wait().success(), "yuyo serve exits cleanly");
}

fn restart_with_socket_activation(runtime: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (old, addr) = activated(runtime, &listener);
    assert_eq!(
        addr,
        listener.local_addr().unwrap(),
        "the passed socket is served"
    );
    let load = Load::start(addr);
    load.wait_for_answers(PER_PHASE);
    stop(old);
    // Until the new process accepts, connections wait in the socket's backlog, which the
    // launcher (this test) keeps open.
    let (new, _) = activated(runtime, &listener);
    load.wait_for_answers(PER_PHASE);
    let (ok, refused, failed) = load.finish();
    drop(new);
    eprintln!("socket activation, {runtime}: {ok} answered, {refused} refused, {failed} failed");
    assert_eq!((refused, failed), (0, 0), "{runtime}: {ok} answered");
}

fn restart_with_reuse_port_handover(runtime: &str) {
    let (old, addr) = start(serve(runtime, &["--bind", "127.0.0.1:0", "--reuse-port"]));
    let load = Load::start(addr);
    load.wait_for_answers(PER_PHASE);
    let bind = addr.to_string();
    let (new, new_addr) = start(serve(runtime, &["--bind", &bind, "--reuse-port"]));
    assert_eq!(new_addr, addr);
    load.wait_for_answers(PER_PHASE);
    stop(old);
    load.wait_for_answers(PER_PHASE);
    let (ok, refused, failed) = load.finish();
    drop(new);
    eprintln!("reuse-port handover, {runtime}: {ok} answered, {refused} refused, {failed} failed");
    assert_eq!((refused, failed), (0, 0), "{runtime}: {ok} answered");
}

/// Stop, then start on the same port: the connections made in between are refused.
fn plain_restart_refuses_connections(runtime: &str) {
    let (old, addr) = start(serve(runtime, &["--bind", "127.0.0.1:0"]));
    let load = Load::start(addr);
    load.wait_for_answers(PER_PHASE);
    stop(old);
    wait_until(
        || load.counts.refused.load(Ordering::Relaxed) > 0,
        "refused connection while no process listens",
    );
    let bind = addr.to_string();
    let (new, _) = start(serve(runtime, &["--bind", &bind]));
    load.wait_for_answers(PER_PHASE);
    let (ok, refused, failed) = load.finish();
    drop(new);
    eprintln!("plain restart, {runtime}: {ok} answered, {refused} refused, {failed} failed");
    assert!(refused > 0);
}

#[test]
fn restarts_fail_no_request_on_any_runtime() {
    for runtime in ["smol", "tokio", "blocking", "tower"] {
        restart_with_socket_activation(runtime);
        restart_with_reuse_port_handover(runtime);
    }
    plain_restart_refuses_connections("smol");
}
