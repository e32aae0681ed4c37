//! What yuyo-tokio's driver adds to the conformance suite: large responses written in
//! pieces as the socket takes them, the session's write deadline against a peer that does
//! not read, and the connection slots at the cap (eviction of a waiting peer, waiting for
//! a vacancy while every connection is busy).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use yuyo_conformance::client::{Client, Request};
use yuyo_conformance::demo::{demo_handlers, demo_verifier};
use yuyo_conformance::fixtures::{self, command_named};
use yuyo_core::endpoint::{
    Context, Endpoint, EndpointConfig, Handler, InteractionKind, OnConflict, Reply,
};
use yuyo_core::multipart::FileSource;
use yuyo_core::server::Slots;
use yuyo_tokio::{ServeOptions, Server, Service, ShutdownHandle};

/// A server running on its own thread.
struct Running {
    addr: SocketAddr,
    slots: Slots,
    handle: ShutdownHandle,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        self.handle.shutdown();
        self.thread.join().expect("the serving thread");
    }
}

/// The demo handlers, plus `disk` (replies with `file`) and `slow` (waits for a permit of
/// `gate`).
fn service(file: Option<PathBuf>, gate: Arc<Semaphore>, options: ServeOptions) -> Service {
    let mut handlers = demo_handlers();
    let command = move |ctx: Context| {
        let (file, gate) = (file.clone(), gate.clone());
        async move {
            match ctx.interaction().data.as_ref().map(command_name).as_deref() {
                Some("disk") => Ok(Some(Reply::message("disk").with_file_source(
                    "data.bin",
                    FileSource::Path {
                        path: file.expect("a file"),
                        len: None,
                    },
                    Some("application/octet-stream"),
                ))),
                Some("slow") => {
                    gate.acquire().await.expect("gate").forget();
                    Ok(Some(Reply::message("slow")))
                }
                _ => yuyo_conformance::demo::command(ctx).await,
            }
        }
    };
    let _ = handlers.set(
        InteractionKind::Command,
        Handler::new(command),
        OnConflict::Replace,
    );
    let endpoint = Endpoint::new(EndpointConfig::new(demo_verifier()), handlers);
    Service::new(endpoint).with_options(options)
}

fn command_name(data: &twilight_model::application::interaction::InteractionData) -> String {
    match data {
        twilight_model::application::interaction::InteractionData::ApplicationCommand(data) => {
            data.name.clone()
        }
        _ => String::new(),
    }
}

fn start(service: Service) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("address");
    let slots = service.slots().clone();
    let server = Server::new(service);
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                server.serve(listener).await
            })
            .expect("serve");
    });
    Running {
        addr,
        slots,
        handle,
        thread,
    }
}

fn options() -> ServeOptions {
    ServeOptions {
        grace_period: Duration::from_secs(5),
        ..ServeOptions::default()
    }
}

/// A temporary file of `len` patterned bytes, removed on drop.
struct TempFile(PathBuf, Vec<u8>);

impl TempFile {
    fn new(name: &str, len: usize) -> Self {
        let contents: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let path =
            std::env::temp_dir().join(format!("yuyo-tokio-{}-{name}.bin", std::process::id()));
        std::fs::write(&path, &contents).expect("write the file");
        Self(path, contents)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo(client: &mut Client) {
    let response = client
        .roundtrip(&Request::signed(fixtures::COMMAND_ECHO))
        .expect("an echo response");
    assert_eq!(response.status, 200, "{response:?}");
}

/// A file far larger than the socket buffers reaches a reader that starts late intact:
/// the driver writes what the socket takes and the rest when it is writable.
#[test]
fn large_file_reaches_a_late_reader_intact() {
    let file = TempFile::new("large", 8 << 20);
    let running = start(service(Some(file.0.clone()), no_gate(), options()));
    let mut client = Client::connect(running.addr).expect("connect");
    client
        .send(&Request::signed(&command_named("disk")).to_bytes())
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let response = client.response().expect("a response");
    assert_eq!(response.status, 200);
    let start = response
        .body
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"\r\n\r\n")
        .map(|(i, _)| i + 4)
        .nth(1)
        .expect("the file part's headers");
    let contents = &response.body[start..start + file.1.len()];
    assert!(contents == file.1.as_slice(), "the file arrives unchanged");
    echo(&mut client);
    drop(client);
    running.stop();
}

/// A peer that does not read its response is closed once the write timeout passes
/// without progress, and frees its slot; others are served meanwhile.
#[test]
fn non_reading_peer_is_closed_at_the_write_timeout() {
    let file = TempFile::new("unread", 16 << 20);
    let mut options = options();
    options.http.write_timeout = Duration::from_secs(1);
    let running = start(service(Some(file.0.clone()), no_gate(), options));
    let mut stalled = Client::connect(running.addr).expect("connect");
    stalled
        .send(&Request::signed(&command_named("disk")).to_bytes())
        .expect("send");
    let mut other = Client::connect(running.addr).expect("connect");
    echo(&mut other);
    drop(other);
    wait_until(
        "the stalled connection closed",
        Duration::from_secs(8),
        || running.slots.stats().open == 0,
    );
    assert!(
        stalled
            .read_to_close()
            .map_or(true, |bytes| bytes.len() < file.1.len()),
        "the response was cut short"
    );
    running.stop();
}

/// At the cap, a new connection takes the slot of an idle keep-alive connection (which
/// is closed), without waiting for any timeout.
#[test]
fn idle_connection_is_evicted_at_the_cap() {
    let mut options = options();
    options.max_connections = 1;
    options.pressure_timeout = Duration::from_secs(60);
    let running = start(service(None, no_gate(), options));
    let mut idle = Client::connect(running.addr).expect("connect");
    echo(&mut idle);
    let mut fresh = Client::connect(running.addr).expect("connect");
    echo(&mut fresh);
    assert_eq!(running.slots.stats().evictions, 1);
    idle.expect_closed();
    drop(fresh);
    running.stop();
}

/// At the cap with every connection busy on the server's side, a new connection waits
/// (accepted, not admitted) until a slot is free, then is served.
#[test]
fn busy_connections_are_never_evicted() {
    let mut options = options();
    options.max_connections = 1;
    let gate = Arc::new(Semaphore::new(0));
    let running = start(service(None, gate.clone(), options));
    let mut busy = Client::connect(running.addr).expect("connect");
    busy.send(&Request::signed(&command_named("slow")).to_bytes())
        .expect("send");
    wait_until("the slow handler started", Duration::from_secs(5), || {
        running.slots.stats().open == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    let waiting = std::thread::spawn(move || {
        let mut client = Client::connect(running.addr).expect("connect");
        echo(&mut client);
        running
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "served while every slot was busy");
    gate.add_permits(1);
    let response = busy.response().expect("the slow response");
    assert_eq!(response.status, 200);
    assert!(response.text().contains("slow"), "{response:?}");
    drop(busy);
    // Once answered, the busy connection waits on its peer: the new one may take its slot.
    let running = waiting.join().expect("the waiting client");
    running.stop();
}

fn no_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}
