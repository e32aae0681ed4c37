//! The attacking connections: opened at the start of a run, held until its end, and
//! watched for the server closing them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::AttackKind;
use crate::procnet;
use crate::request::{PING, signed_post_head};

/// One request of the pipeline-no-read attack (the path does not matter: any answer backs
/// up in the attacker's tiny receive window).
const PIPELINED: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// The attacker's receive buffer: the server's answers fill it at once.
const RECV_BUFFER: usize = 4096;
/// A real network's MSS: loopback's 64 KiB one would let the server's answers through in
/// a few large segments and hide the attack.
const MSS: u32 = 1460;
/// The body length the stalled-body attack announces (and never sends).
const STALLED_BODY_LEN: usize = 1000;
/// Connects in flight at once, so the server's accept backlog is not what fails.
const CONNECTS_IN_FLIGHT: usize = 128;

/// What to attack and how.
pub struct Plan {
    /// The attack.
    pub kind: AttackKind,
    /// The server.
    pub addr: SocketAddr,
    /// How many attacking connections to open.
    pub connections: usize,
    /// Requests per connection (pipeline-no-read).
    pub pipeline: usize,
    /// The deadline of each attacking connect.
    pub connect_timeout: Duration,
}

/// What an attacking connection's task tells the rest of the tool.
#[derive(Debug, Default)]
struct ConnState {
    /// The task saw the server end the connection (EOF, reset, broken pipe).
    closed: AtomicBool,
    /// Bytes the server's socket accepted from us.
    written: AtomicU64,
    /// The whole pipeline was accepted by the kernel (the server's receive buffer and ours
    /// can hold it on loopback: this alone does not mean the server read it).
    done_writing: AtomicBool,
}

/// One established attacking connection.
struct Conn {
    /// Its socket's inode, to look its TCP state up in `/proc/net/tcp`.
    inode: Option<u64>,
    /// What its task reports.
    state: Arc<ConnState>,
    /// When the server was first seen to have closed it (seconds into the run).
    closed_at: Option<f64>,
}

/// The attack in progress.
pub struct Attack {
    conns: Vec<Conn>,
    connect_errors: BTreeMap<String, usize>,
    scan_errors: usize,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// The attack's counts at the end of a run.
#[derive(Debug)]
pub struct Summary {
    /// Connections established.
    pub connected: usize,
    /// Failed connects, by kind.
    pub connect_errors: BTreeMap<String, usize>,
    /// Connections the server closed during the run.
    pub closed: usize,
    /// When the first and the last of them were seen closed (seconds into the run).
    pub closed_span: Option<(f64, f64)>,
    /// Mean bytes per connection the server's socket accepted.
    pub written_avg: u64,
    /// Connections whose whole pipeline was accepted.
    pub done_writing: usize,
    /// Failed reads of `/proc/net/tcp`.
    pub scan_errors: usize,
}

/// The bytes each attacking connection sends.
fn payload(plan: &Plan, key: &SigningKey) -> Arc<[u8]> {
    match plan.kind {
        AttackKind::PipelineNoRead => PIPELINED.repeat(plan.pipeline).into(),
        AttackKind::StalledBody => {
            // A valid body (PING padded with spaces) that is signed but never sent.
            let mut body = PING.to_vec();
            body.resize(STALLED_BODY_LEN.max(PING.len()), b' ');
            signed_post_head(key, &body, "").into()
        }
        AttackKind::None => Arc::from(Vec::new()),
    }
}

/// Opens the attacking connections (bounded: every connect has its deadline, the whole
/// phase one too) and starts each one's attack.
pub async fn open(plan: &Plan, key: &SigningKey) -> Attack {
    let (stop, stop_rx) = watch::channel(false);
    let connects = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let payload = payload(plan, key);
    let count = if plan.kind == AttackKind::None {
        0
    } else {
        plan.connections
    };
    let mut replies = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (reply, replied) = oneshot::channel();
        let start = Start {
            kind: plan.kind,
            addr: plan.addr,
            payload: Arc::clone(&payload),
            connects: Arc::clone(&connects),
            timeout: plan.connect_timeout,
            stop: stop_rx.clone(),
        };
        tasks.push(tokio::spawn(connection(start, reply)));
        replies.push(replied);
    }
    let rounds = u32::try_from(count / CONNECTS_IN_FLIGHT + 2).unwrap_or(u32::MAX);
    let deadline = Instant::now() + plan.connect_timeout.saturating_mul(rounds);
    let mut conns = Vec::with_capacity(count);
    let mut connect_errors = BTreeMap::new();
    for replied in replies {
        let failure = match tokio::time::timeout_at(deadline, replied).await {
            Ok(Ok(Ok((inode, state)))) => {
                conns.push(Conn {
                    inode,
                    state,
                    closed_at: None,
                });
                continue;
            }
            Ok(Ok(Err(kind))) => kind,
            Ok(Err(_)) => "task-ended".to_owned(),
            Err(_) => "phase-deadline".to_owned(),
        };
        *connect_errors.entry(failure).or_default() += 1;
    }
    Attack {
        conns,
        connect_errors,
        scan_errors: 0,
        tasks,
        stop,
    }
}

/// What a connection's task needs.
struct Start {
    kind: AttackKind,
    addr: SocketAddr,
    payload: Arc<[u8]>,
    connects: Arc<Semaphore>,
    timeout: Duration,
    stop: watch::Receiver<bool>,
}

/// The connect's result as the task reports it: the socket's inode and shared state, or
/// why it failed.
type Reply = Result<(Option<u64>, Arc<ConnState>), String>;

/// One attacking connection: connect, report, attack until the run stops.
async fn connection(start: Start, reply: oneshot::Sender<Reply>) {
    let connected = {
        let Ok(_permit) = start.connects.acquire().await else {
            return;
        };
        tokio::time::timeout(start.timeout, connect(start.kind, start.addr)).await
    };
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // The receiver only goes away when the connect phase is over.
            let _ = reply.send(Err(error_kind(&e)));
            return;
        }
        Err(_) => {
            let _ = reply.send(Err("timeout".to_owned()));
            return;
        }
    };
    let state = Arc::new(ConnState::default());
    if reply
        .send(Ok((procnet::inode(&stream), Arc::clone(&state))))
        .is_err()
    {
        return;
    }
    let mut stop = start.stop;
    match start.kind {
        AttackKind::PipelineNoRead => {
            pipeline_no_read(stream, &start.payload, &state, &mut stop).await
        }
        AttackKind::StalledBody => stalled_body(stream, &start.payload, &state, &mut stop).await,
        AttackKind::None => {}
    }
}

/// A TCP connection to `addr`, with the small receive buffer and MSS set before the
/// handshake for pipeline-no-read (the MSS is advertised in the SYN).
async fn connect(kind: AttackKind, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if kind == AttackKind::PipelineNoRead {
        socket.set_recv_buffer_size(RECV_BUFFER)?;
        socket.set_tcp_mss(MSS)?;
    }
    socket.set_nonblocking(true)?;
    TcpSocket::from_std_stream(socket.into())
        .connect(addr)
        .await
}

/// A short, space-free name for a connect error.
fn error_kind(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(24) => "emfile".to_owned(),
        _ => format!("{:?}", error.kind()),
    }
}

/// Attack A: write the pipeline as far as the server's socket takes it, never read, and
/// hold the connection until the run stops.
async fn pipeline_no_read(
    mut stream: TcpStream,
    payload: &[u8],
    state: &ConnState,
    stop: &mut watch::Receiver<bool>,
) {
    let mut offset = 0;
    while offset < payload.len() {
        tokio::select! {
            written = stream.write(&payload[offset..]) => match written {
                Ok(n) if n > 0 => {
                    offset += n;
                    state.written.fetch_add(n as u64, Ordering::Relaxed);
                }
                _ => {
                    state.closed.store(true, Ordering::Relaxed);
                    break;
                }
            },
            _ = stop.changed() => return,
        }
    }
    if offset == payload.len() {
        state.done_writing.store(true, Ordering::Relaxed);
    }
    // Either the run stopped or the tool is ending: both end the attack.
    let _ = stop.changed().await;
}

/// Attack B: send the signed head announcing a body, then nothing; read only to see the
/// server give up (an error response, then its close).
async fn stalled_body(
    mut stream: TcpStream,
    head: &[u8],
    state: &ConnState,
    stop: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        written = stream.write_all(head) => match written {
            Ok(()) => {
                state.written.fetch_add(head.len() as u64, Ordering::Relaxed);
            }
            Err(_) => state.closed.store(true, Ordering::Relaxed),
        },
        _ = stop.changed() => return,
    }
    let mut buf = [0u8; 1024];
    while !state.closed.load(Ordering::Relaxed) {
        tokio::select! {
            read = stream.read(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    state.closed.store(true, Ordering::Relaxed);
                }
            }
            _ = stop.changed() => return,
        }
    }
    let _ = stop.changed().await;
}

impl Attack {
    /// Attacking connections established.
    pub fn connected(&self) -> usize {
        self.conns.len()
    }

    /// Notes the connections the server has closed by now (`at`: seconds into the run):
    /// those whose task saw it, and those no longer ESTABLISHED in `/proc/net/tcp` (a
    /// pipeline-no-read connection never reads, so only the kernel knows).
    pub fn scan(&mut self, at: f64) {
        let states = procnet::tcp_states();
        if states.is_err() {
            self.scan_errors += 1;
        }
        for conn in self.conns.iter_mut().filter(|c| c.closed_at.is_none()) {
            let gone_by_kernel = match (&states, conn.inode) {
                (Ok(states), Some(inode)) => !procnet::is_established(states, inode),
                _ => false,
            };
            if gone_by_kernel || conn.state.closed.load(Ordering::Relaxed) {
                conn.closed_at = Some(at);
            }
        }
    }

    /// Stops every connection's task (each at most `grace` later) and sums the run up.
    pub async fn stop(self, grace: Duration) -> Summary {
        // No receivers left only if every task has ended already.
        let _ = self.stop.send(true);
        let deadline = Instant::now() + grace;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        let closed: Vec<f64> = self.conns.iter().filter_map(|c| c.closed_at).collect();
        let span = closed
            .iter()
            .copied()
            .reduce(f64::min)
            .zip(closed.iter().copied().reduce(f64::max));
        let connected = self.conns.len();
        let written: u64 = self
            .conns
            .iter()
            .map(|c| c.state.written.load(Ordering::Relaxed))
            .sum();
        Summary {
            connected,
            connect_errors: self.connect_errors,
            closed: closed.len(),
            closed_span: span,
            written_avg: written / u64::try_from(connected.max(1)).unwrap_or(1),
            done_writing: self
                .conns
                .iter()
                .filter(|c| c.state.done_writing.load(Ordering::Relaxed))
                .count(),
            scan_errors: self.scan_errors,
        }
    }
}
