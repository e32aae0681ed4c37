//! Blocking-adapter behaviour outside the shared suite: the connection cap (busy
//! connections keep their slots, waiting ones are evicted), a shutdown requested before
//! serving, and connections that wait (idle, half-sent, lingering) without holding a
//! thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use yuyo_blocking::{ServeError, ServeOptions, Server, ShutdownHandle};
use yuyo_conformance::client::{Client, Request};
use yuyo_conformance::{demo, fixtures};

/// At the cap, a connection whose handler runs keeps its slot: a further connection is
/// not answered until that handler is done. Then the first connection, idle (waiting on
/// its peer), is evicted for it.
#[test]
fn connection_cap_spares_busy_connections_and_evicts_idle_ones() {
    use twilight_model::application::interaction::InteractionData;
    let (started_tx, started) = std::sync::mpsc::channel();
    let started_tx = std::sync::Arc::new(Mutex::new(started_tx));
    let mut handlers = yuyo_core::endpoint::Handlers::new();
    let _ = handlers.set_command(move |ctx| {
        let started_tx = std::sync::Arc::clone(&started_tx);
        async move {
            let Some(InteractionData::ApplicationCommand(data)) = &ctx.interaction().data else {
                return Err(yuyo_core::endpoint::HandlerError::msg("not a command"));
            };
            let _ = lock(&started_tx).send(());
            // Blocks its thread, as a handler calling blocking IO does.
            std::thread::sleep(BLOCKED);
            Ok(Some(yuyo_core::endpoint::Reply::message(data.name.clone())))
        }
    });
    let endpoint = yuyo_core::endpoint::Endpoint::new(
        yuyo_core::endpoint::EndpointConfig::new(demo::demo_verifier()),
        handlers,
    );
    let service = yuyo_blocking::Service::new(endpoint).with_options(ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    });
    let slots = service.slots().clone();
    let server = Running::serve(service);

    let mut first = server.connect();
    first
        .send(&Request::signed(&fixtures::command_named("slow")).to_bytes())
        .unwrap();
    started
        .recv_timeout(yuyo_conformance::client::IO_TIMEOUT)
        .unwrap();
    let mut second = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(&mut second, &ping().to_bytes()).unwrap();
    // A bounded negative check: not answered while the first one's handler runs.
    second
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let mut byte = [0_u8; 1];
    let waited = std::io::Read::read(&mut second, &mut byte).unwrap_err();
    assert!(
        matches!(waited.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waited}"
    );
    assert_eq!(first.response().unwrap().json()["data"]["content"], "slow");
    second
        .set_read_timeout(Some(yuyo_conformance::client::IO_TIMEOUT))
        .unwrap();
    let n = std::io::Read::read(&mut second, &mut byte).unwrap();
    assert_eq!(&byte[..n], b"H", "answered once the handler was done");
    // The first connection, idle, gave its slot to the second.
    first.expect_closed();
    assert_eq!(slots.stats().evictions, 1);
    drop(second);
    server.stop();
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A shutdown requested before `serve` makes it stop right after startup, running the
/// callbacks of both phases.
#[test]
fn shutdown_before_serve() {
    let (tx, rx) = std::sync::mpsc::channel();
    let start_tx = tx.clone();
    let service = demo::demo_service(demo::demo_verifier())
        .with_startup_callback(move || {
            let tx = start_tx.clone();
            async move {
                tx.send("startup").unwrap();
                Ok(())
            }
        })
        .with_shutdown_callback(move || {
            let tx = tx.clone();
            async move {
                tx.send("shutdown").unwrap();
                Ok(())
            }
        });
    let server = Server::new(service);
    server.shutdown_handle().shutdown();
    server
        .serve(TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["startup", "shutdown"]);
}

/// The tests that count connection threads run one at a time (the other tests here
/// start at most a couple).
static SERIAL: Mutex<()> = Mutex::new(());

/// At most this many connection threads for the 30 to 200 connections that wait in
/// these tests: threads are added for bursts of work, never one per waiting connection
/// (margin for a loaded machine, where the pool may grow a little).
const FEW_THREADS: usize = 16;

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server on a thread of its own.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    fn start(options: ServeOptions) -> Self {
        Self::serve(demo::demo_service(demo::demo_verifier()).with_options(options))
    }

    fn serve(service: yuyo_blocking::Service) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(service);
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.serve(listener));
        Self {
            addr,
            handle,
            thread,
        }
    }

    fn connect(&self) -> Client {
        Client::connect(self.addr).unwrap()
    }

    fn stop(self) {
        self.handle.shutdown();
        self.thread.join().unwrap().unwrap();
    }
}

/// This process's threads named `yuyo-connection`.
fn connection_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "yuyo-connection")
        .count()
}

/// The count of connection threads once it is at most `max`, or what it still is after
/// a bounded wait (threads of a previous test may still be exiting).
fn settled_threads(max: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = connection_threads();
        if count <= max || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ping() -> Request {
    Request::signed(fixtures::PING)
}

/// Idle keep-alive connections are parked with the reactor instead of holding a thread
/// each, and are served again when a request comes.
#[test]
fn idle_keep_alive_connections_hold_no_thread() {
    let _serial = serial();
    let server = Running::start(ServeOptions::default());
    let mut clients: Vec<Client> = (0..200)
        .map(|_| {
            let mut client = server.connect();
            assert_eq!(client.roundtrip(&ping()).unwrap().status, 200);
            client
        })
        .collect();
    let threads = settled_threads(FEW_THREADS);
    assert!(
        threads <= FEW_THREADS,
        "{threads} connection threads for 200 idle connections"
    );
    for client in &mut clients {
        let response = client.roundtrip(&ping()).unwrap();
        assert_eq!(response.status, 200);
        assert!(!response.closes());
    }
    drop(clients);
    server.stop();
}

/// Connections that sent half a request head hold no thread; their head deadline still
/// fires (408, then close) while other connections are served.
#[test]
fn half_sent_heads_hold_no_thread_and_time_out() {
    let _serial = serial();
    let mut options = ServeOptions::default();
    options.http.head_timeout = Duration::from_secs(2);
    let server = Running::start(options);
    let mut partial: Vec<Client> = (0..50)
        .map(|_| {
            let mut client = server.connect();
            client
                .send(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                .unwrap();
            client
        })
        .collect();
    let mut other = server.connect();
    for _ in 0..3 {
        assert_eq!(other.roundtrip(&ping()).unwrap().status, 200);
    }
    let threads = settled_threads(FEW_THREADS);
    assert!(
        threads <= FEW_THREADS,
        "{threads} connection threads for 50 half-sent heads"
    );
    for client in &mut partial {
        let response = client.response().unwrap();
        assert_eq!(response.status, 408);
        assert!(response.closes());
        client.expect_closed();
    }
    assert_eq!(other.roundtrip(&ping()).unwrap().status, 200);
    drop(other);
    server.stop();
}

/// A parked idle keep-alive connection is closed silently at its idle deadline.
#[test]
fn idle_deadline_closes_a_parked_connection() {
    let mut options = ServeOptions::default();
    options.http.idle_timeout = Duration::from_millis(200);
    let server = Running::start(options);
    let mut client = server.connect();
    assert_eq!(client.roundtrip(&ping()).unwrap().status, 200);
    client.expect_closed();
    server.stop();
}

/// Shutdown closes parked idle connections at once, and `serve` returns.
#[test]
fn shutdown_closes_parked_connections() {
    let _serial = serial();
    let server = Running::start(ServeOptions::default());
    let mut clients: Vec<Client> = (0..50)
        .map(|_| {
            let mut client = server.connect();
            assert_eq!(client.roundtrip(&ping()).unwrap().status, 200);
            client
        })
        .collect();
    let started = Instant::now();
    server.handle.shutdown();
    for client in &mut clients {
        client.expect_closed();
    }
    drop(clients);
    server.thread.join().unwrap().unwrap();
    // Far below the idle deadline (75 s) the connections would otherwise wait for.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `Connection: close` answers arrive whole while the clients hold back their FIN, and
/// the lingering closes (done by the reactor) hold no thread.
#[test]
fn lingering_closes_hold_no_thread() {
    let _serial = serial();
    let mut options = ServeOptions::default();
    options.http.linger.timeout = Duration::from_secs(30);
    let server = Running::start(options);
    let close = ping().set("Connection", "close");
    let mut clients: Vec<Client> = (0..30)
        .map(|_| {
            let mut client = server.connect();
            let response = client.roundtrip(&close).unwrap();
            assert_eq!(response.status, 200);
            assert!(response.closes());
            assert_eq!(response.json()["type"], 1);
            // The server's FIN; this side stays open.
            client.expect_closed();
            client
        })
        .collect();
    let threads = settled_threads(FEW_THREADS);
    assert!(
        threads <= FEW_THREADS,
        "{threads} connection threads for 30 lingering closes"
    );
    // Bytes sent during the linger are drained, not answered.
    for client in &mut clients {
        client.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    }
    let mut other = server.connect();
    assert_eq!(other.roundtrip(&ping()).unwrap().status, 200);
    drop(clients);
    drop(other);
    server.stop();
}

/// At the cap, a lingering close (it waits on its peer) is evicted for a new connection,
/// long before its linger deadline.
#[test]
fn a_lingering_close_at_the_cap_is_evicted() {
    let mut options = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    options.http.linger.timeout = Duration::from_secs(60);
    let service = demo::demo_service(demo::demo_verifier()).with_options(options);
    let slots = service.slots().clone();
    let server = Running::serve(service);
    let mut first = server.connect();
    // Bytes pipelined after a `Connection: close` request make the close linger.
    let mut bytes = ping().set("Connection", "close").to_bytes();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
    first.send(&bytes).unwrap();
    let response = first.response().unwrap();
    assert_eq!(response.status, 200);
    assert!(response.closes());
    first.expect_closed();
    // `first` keeps its side open: only an eviction ends its linger this soon.
    let mut second = server.connect();
    assert_eq!(second.roundtrip(&ping()).unwrap().status, 200);
    assert_eq!(slots.stats().evictions, 1);
    drop((first, second));
    server.stop();
}

/// A server for `handlers` (with the demo key) on a thread of its own.
fn start_with(handlers: yuyo_core::endpoint::Handlers) -> Running {
    let endpoint = yuyo_core::endpoint::Endpoint::new(
        yuyo_core::endpoint::EndpointConfig::new(demo::demo_verifier()),
        handlers,
    );
    Running::serve(yuyo_blocking::Service::new(endpoint))
}

/// How long the `slow` command below blocks its thread.
const BLOCKED: Duration = Duration::from_millis(400);

/// Commands: `slow` blocks its thread (as a handler calling blocking IO does), any
/// other answers at once.
fn blocking_handlers() -> yuyo_core::endpoint::Handlers {
    use twilight_model::application::interaction::InteractionData;
    let mut handlers = yuyo_core::endpoint::Handlers::new();
    let _ = handlers.set_command(|ctx| async move {
        let Some(InteractionData::ApplicationCommand(data)) = &ctx.interaction().data else {
            return Err(yuyo_core::endpoint::HandlerError::msg("not a command"));
        };
        if data.name == "slow" {
            std::thread::sleep(BLOCKED);
        }
        Ok(Some(yuyo_core::endpoint::Reply::message(data.name.clone())))
    });
    handlers
}

/// Many busy keep-alive connections with quick handlers are served by a few threads
/// (their requests in groups, one signature batch each), not a thread per connection.
#[test]
fn busy_connections_with_quick_handlers_share_few_threads() {
    let _serial = serial();
    let server = start_with(blocking_handlers());
    let addr = server.addr;
    let clients: Vec<_> = (0..48)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr).unwrap();
                let request = Request::signed(&fixtures::command_named("quick"));
                for _ in 0..20 {
                    let response = client.roundtrip(&request).unwrap();
                    assert_eq!(response.status, 200);
                    assert_eq!(response.json()["data"]["content"], "quick");
                }
                connection_threads()
            })
        })
        .collect();
    let most = clients
        .into_iter()
        .map(|client| client.join().unwrap())
        .max()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Threads are started up to the cores, plus a few when the queue stalls (a
    // descheduled thread on a loaded machine).
    assert!(
        most <= cores + 8,
        "{most} connection threads for 48 busy connections on {cores} cores"
    );
    server.stop();
}

/// A handler that blocks its thread holds up no other connection once it was seen to
/// block: the server then gives every connection a thread of its own.
#[test]
fn a_blocking_handler_holds_up_no_other_connection() {
    let _serial = serial();
    let server = start_with(blocking_handlers());
    let slow = Request::signed(&fixtures::command_named("slow"));
    let quick = Request::signed(&fixtures::command_named("quick"));
    // The first blocking call shows the server that handlers may block.
    let mut first = server.connect();
    assert_eq!(first.roundtrip(&slow).unwrap().status, 200);

    let mut blocked = server.connect();
    let mut others: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for other in &mut others {
        assert_eq!(other.roundtrip(&quick).unwrap().status, 200);
    }
    let started = Instant::now();
    blocked.send(&slow.to_bytes()).unwrap();
    // Give the slow request a head start to the handler, then the quick ones must come
    // back while it still blocks: before `BLOCKED` has passed.
    std::thread::sleep(Duration::from_millis(50));
    for other in &mut others {
        let response = other.roundtrip(&quick).unwrap();
        assert_eq!(response.json()["data"]["content"], "quick");
    }
    let quick_done = started.elapsed();
    assert!(
        quick_done < BLOCKED,
        "quick requests took {quick_done:?}, behind a handler blocking for {BLOCKED:?}"
    );
    let response = blocked.response().unwrap();
    assert_eq!(response.json()["data"]["content"], "slow");
    assert!(started.elapsed() >= BLOCKED);
    server.stop();
}

/// A peer that sends requests but never reads the answers holds up only its own
/// connection: the thread that waits for it to take bytes first hands its other
/// connections away.
#[test]
fn a_peer_that_does_not_read_holds_up_no_other_connection() {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _serial = serial();
    let server = Running::start(ServeOptions::default());
    // Busy connections, each reporting its slowest answer: enough that every connection
    // thread (one per core) holds some, so the stalled peer below joins one of them.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let count = 4 * cores + 8;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(count + 1));
    let busy: Vec<_> = (0..count)
        .map(|_| {
            let (addr, stop, started) = (server.addr, Arc::clone(&stop), Arc::clone(&started));
            std::thread::spawn(move || {
                let mut client = Client::connect(addr).unwrap();
                for _ in 0..20 {
                    assert_eq!(client.roundtrip(&ping()).unwrap().status, 200);
                }
                started.wait();
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    assert_eq!(client.roundtrip(&ping()).unwrap().status, 200);
                    slowest = slowest.max(started.elapsed());
                }
                slowest
            })
        })
        .collect();
    // The peer that will stop reading is busy like the others first, so a thread holds
    // it together with some of them.
    let mut peer = server.connect();
    for _ in 0..20 {
        assert_eq!(peer.roundtrip(&ping()).unwrap().status, 200);
    }
    started.wait();
    // 64 KiB echoes: each answer is as large as its request.
    let text = "x".repeat(64 * 1024);
    let body =
        String::from_utf8_lossy(fixtures::COMMAND_ECHO).replacen(fixtures::ECHO_TEXT, &text, 1);
    let request = Request::signed(body.as_bytes()).to_bytes();
    let mut stalled = peer.writer().unwrap();
    stalled.set_nonblocking(true).unwrap();
    // Pipeline requests until the server stops reading them: it waits for this peer to
    // take its answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    let mut blocked_since: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "the server kept reading");
        match stalled.write(&request[written % request.len()..]) {
            Ok(n) => {
                written += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    // The busy connections go on while the server waits for the stalled peer (a
    // connection held up behind it waits until the peer is gone, 3 s from now).
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    drop((stalled, peer));
    let slowest = busy
        .into_iter()
        .map(|client| client.join().unwrap())
        .max()
        .unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "a connection waited {slowest:?} behind a peer that does not read"
    );
    server.stop();
}

/// Connections served together each get every pipelined request answered, in order
/// (a thread answers one request per connection per round).
#[test]
fn pipelined_requests_on_connections_served_together() {
    let _serial = serial();
    let server = Running::start(ServeOptions::default());
    let mut clients: Vec<Client> = (0..16).map(|_| server.connect()).collect();
    for round in 0..3 {
        for client in &mut clients {
            let mut burst = Vec::new();
            for n in 0..5 {
                let name = format!("r{round}n{n}");
                burst.extend(Request::signed(&fixtures::command_named(&name)).to_bytes());
            }
            client.send(&burst).unwrap();
        }
        for client in &mut clients {
            for n in 0..5 {
                let response = client.next_response().unwrap();
                assert_eq!(response.status, 200);
                let expected = format!("unknown command `r{round}n{n}`");
                assert_eq!(response.json()["data"]["content"], expected.as_str());
            }
        }
    }
    drop(clients);
    server.stop();
}
