//! Blocking-adapter behaviour outside the shared suite: the connection cap and a
//! shutdown requested before serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use yuyo_blocking::{ServeOptions, Server};
use yuyo_conformance::client::{Client, Request};
use yuyo_conformance::{demo, fixtures};

/// At the cap, a further connection waits in the backlog until one closes.
#[test]
fn connection_cap_holds_further_connections_back() {
    let service = demo::demo_service(demo::demo_verifier()).with_options(ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(service);
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.serve(listener));

    let mut first = Client::connect(addr).unwrap();
    let ping = Request::signed(fixtures::PING);
    assert_eq!(first.roundtrip(&ping).unwrap().status, 200);

    let mut second = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut second, &ping.to_bytes()).unwrap();
    // A bounded negative check: not answered while the first connection is open.
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0_u8; 1];
    let waited = std::io::Read::read(&mut second, &mut byte).unwrap_err();
    assert!(
        matches!(waited.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waited}"
    );
    drop(first);
    second
        .set_read_timeout(Some(yuyo_conformance::client::IO_TIMEOUT))
        .unwrap();
    let n = std::io::Read::read(&mut second, &mut byte).unwrap();
    assert_eq!(
        &byte[..n],
        b"H",
        "answered once the first connection closed"
    );
    drop(second);

    handle.shutdown();
    thread.join().unwrap().unwrap();
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
