//! Cheap unauthenticated attacks on the connection cap, scaled down (a cap of 64
//! connections, 80 attackers) so they stay fast: peers that pipeline without reading,
//! and peers that stall in a head or a body. A fresh client must still get its PONG
//! within 1 s, attackers must be closed within the (pressure) deadlines, and eviction
//! must never drop a connection whose handler is running. 127.0.0.1 only; every loop is
//! bounded in count and time.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failure is a panic

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use yuyo_core::endpoint::{Endpoint, Handlers, Reply};
use yuyo_core::server::Slots;
use yuyo_core::service::{ServeOptions, Service};

use crate::client::{Client, Request};
use crate::demo::{demo_service, demo_verifier};
use crate::fixtures;
use crate::{Gate, Harness, Running};

/// The cap of these cases.
const CAP: usize = 64;
/// Attacking connections: more than the cap.
const ATTACKERS: usize = 80;
/// A fresh client's whole budget for its PONG.
const FRESH_DEADLINE: Duration = Duration::from_secs(1);
/// Fresh PINGs sent during an attack.
const FRESH_TRIES: usize = 5;
/// Requests one pipelining attacker writes (as far as its socket takes them).
const PIPELINED: usize = 4000;

fn attack_options() -> ServeOptions {
    let mut options = ServeOptions {
        max_connections: CAP,
        grace_period: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    // Long usual deadlines: only the pressure rule and eviction can save the day.
    options.http.head_timeout = Duration::from_secs(30);
    options.http.body_timeout = Duration::from_secs(30);
    options.http.write_timeout = Duration::from_secs(30);
    options
}

/// One attack at a time in a test process: on two cores, two attacks at once measure
/// each other, not the server.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn start<H: Harness>(service: Service) -> (Running, Slots) {
    let slots = service.slots().clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    (H::spawn(service, listener), slots)
}

/// A connection with a 4 KiB receive buffer and a 1,460-byte MSS, set before connecting
/// (loopback's 64 KiB MSS would otherwise let the kernel absorb the attack).
fn small_window(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(4096)?;
    socket.set_tcp_mss(1460)?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// Pipelines `GET /` requests without ever reading, as far as the socket takes them.
fn pipeline_without_reading(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = small_window(addr)?;
    stream.set_nonblocking(true)?;
    let requests = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(PIPELINED);
    let mut written = 0;
    while written < requests.len() {
        match stream.write(&requests[written..]) {
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    Ok(stream)
}

/// Fresh signed PINGs, each on a new connection within [`FRESH_DEADLINE`], all answered.
fn fresh_pings_are_answered(addr: SocketAddr) {
    for attempt in 0..FRESH_TRIES {
        let started = Instant::now();
        let stream = TcpStream::connect_timeout(&addr, FRESH_DEADLINE)
            .unwrap_or_else(|e| panic!("fresh connection {attempt}: {e}"));
        let mut client = Client::from_stream(stream, FRESH_DEADLINE).expect("client");
        let response = client
            .roundtrip(&Request::signed(fixtures::PING))
            .unwrap_or_else(|e| panic!("fresh PING {attempt} not answered: {e}"));
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, br#"{"type":1}"#);
        assert!(
            started.elapsed() < FRESH_DEADLINE,
            "fresh PING {attempt} took {:?}",
            started.elapsed()
        );
    }
}

/// Waits (bounded by `within`) until at most `most` connections are open.
fn open_drops_to(slots: &Slots, most: usize, within: Duration) {
    let until = Instant::now() + within;
    while slots.stats().open > most {
        assert!(
            Instant::now() < until,
            "{} connections still open after {within:?}",
            slots.stats().open
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peers that pipeline thousands of requests and never read do not stop a fresh client
/// from getting its PONG within 1 s, and are closed within the (pressure) write deadline.
pub fn non_reading_pipeliners_do_not_starve<H: Harness>() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (running, slots) = start::<H>(demo_service(demo_verifier()).with_options(attack_options()));
    let attackers: Vec<TcpStream> = (0..ATTACKERS)
        .filter_map(|_| pipeline_without_reading(running.addr).ok())
        .collect();
    assert!(
        attackers.len() > CAP,
        "{} attackers connected",
        attackers.len()
    );
    fresh_pings_are_answered(running.addr);
    // Accepted once half the cap was in use, the attackers' writes get the 1 s pressure
    // deadline (their usual one is 30 s here); evicted ones go at once.
    open_drops_to(&slots, CAP / 2, Duration::from_secs(5));
    drop(attackers);
    running.stop().expect("serve ends cleanly");
}

/// Peers that send a signed head with `Content-Length: 1000` and then nothing do not stop
/// a fresh client at the cap.
pub fn stalled_bodies_at_the_cap_do_not_starve<H: Harness>() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (running, slots) = start::<H>(demo_service(demo_verifier()).with_options(attack_options()));
    let head = Request::signed(&[b'x'; 1000]).head_bytes();
    let attackers: Vec<Client> = (0..ATTACKERS)
        .filter_map(|_| {
            let mut client = Client::connect(running.addr).ok()?;
            client.send(&head).ok()?;
            Some(client)
        })
        .collect();
    assert_eq!(attackers.len(), ATTACKERS);
    fresh_pings_are_answered(running.addr);
    open_drops_to(&slots, CAP / 2, Duration::from_secs(5));
    drop(attackers);
    running.stop().expect("serve ends cleanly");
}

/// Silent peers that fill the cap do not stop a fresh client.
pub fn stalled_heads_at_the_cap_do_not_starve<H: Harness>() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let (running, _slots) =
        start::<H>(demo_service(demo_verifier()).with_options(attack_options()));
    let attackers: Vec<Client> = (0..ATTACKERS)
        .filter_map(|_| {
            let mut client = Client::connect(running.addr).ok()?;
            client.send(b"POST / HTTP/1.1\r\n").ok()?;
            Some(client)
        })
        .collect();
    assert_eq!(attackers.len(), ATTACKERS);
    fresh_pings_are_answered(running.addr);
    drop(attackers);
    running.stop().expect("serve ends cleanly");
}

/// At the cap, a new connection never evicts one whose handler is running: it waits
/// until a slot frees, and every running handler's answer arrives.
pub fn eviction_spares_busy_connections<H: Harness>() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    const BUSY: usize = 4;
    let gate = Gate::new();
    let started = Arc::new(AtomicUsize::new(0));
    let mut handlers = Handlers::new();
    let (wait, count) = (gate.clone(), started.clone());
    handlers
        .set_command(move |_ctx| {
            let gate = wait.clone();
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                gate.wait().await;
                Ok(Some(Reply::message("done")))
            }
        })
        .expect("command handler");
    let options = ServeOptions {
        max_connections: BUSY,
        ..attack_options()
    };
    let endpoint = Endpoint::new(
        yuyo_core::endpoint::EndpointConfig::new(demo_verifier()),
        handlers,
    );
    let (running, slots) = start::<H>(Service::new(endpoint).with_options(options));
    let mut busy: Vec<Client> = (0..BUSY)
        .map(|_| Client::connect(running.addr).expect("connect"))
        .collect();
    let command = Request::signed(fixtures::COMMAND_ECHO).to_bytes();
    for client in &mut busy {
        client.send(&command).expect("send");
    }
    // Every slot is taken by a running handler (bounded wait for the handlers to start).
    let until = Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) < BUSY {
        assert!(Instant::now() < until, "{:?}", slots.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut late = Client::connect(running.addr).expect("connect");
    late.send(&Request::signed(fixtures::PING).to_bytes())
        .expect("send");
    // The late connection cannot take a busy slot: it waits, unanswered.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slots.stats().evictions, 0);
    gate.open();
    for client in &mut busy {
        let response = client.response().expect("the busy connection's answer");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let response = late.response().expect("answered once a slot freed");
    assert_eq!(response.status, 200, "{response:?}");
    running.stop().expect("serve ends cleanly");
}
