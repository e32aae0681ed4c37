//! A demo server for memory measurements of HTTPS (`bench/tls_memory.py`): serves the
//! demo handlers on 127.0.0.1 with a fresh test CA's certificate (`tls`) or in plain
//! HTTP (`plain`), writes the CA (`ca.pem`) and a signed PING request (`ping.http`) into
//! DIR, prints `PORT <port>`, and serves until killed.
//!
//! usage: serve_tls tls|plain DIR
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::num::NonZeroUsize;

use yuyo_conformance::client::Request;
use yuyo_conformance::demo::{demo_service, demo_verifier};
use yuyo_conformance::fixtures;
use yuyo_conformance::tls::TestPki;
use yuyo_core::server::tls::ServerTls;
use yuyo_core::service::ServeOptions;
use yuyo_smol::Server;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect("usage: serve_tls tls|plain DIR");
    let dir = std::path::PathBuf::from(args.next().expect("usage: serve_tls tls|plain DIR"));
    let pki = TestPki::new();
    let cert = pki.server_cert(1);
    std::fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
    std::fs::write(
        dir.join("ping.http"),
        Request::signed(fixtures::PING).to_bytes(),
    )
    .unwrap();
    // No pressure deadlines: every measured connection stays open, idle.
    let options = ServeOptions {
        max_connections: 100_000,
        ..ServeOptions::default()
    };
    let mut service = demo_service(demo_verifier()).with_options(options);
    if mode == "tls" {
        let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
        service = service.with_tls(tls);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = async_net::TcpListener::try_from(listener).unwrap();
    println!("PORT {port}");
    std::io::stdout().flush().unwrap();
    let server = Server::new(service).with_threads(NonZeroUsize::new(2).unwrap());
    async_io::block_on(server.serve(listener)).unwrap();
}
