//! The conformance suite against the blocking adapter.
#![allow(clippy::expect_used)]

use std::net::TcpListener;

use yuyo_blocking::{Server, Service};
use yuyo_conformance::{Harness, Running};

/// Serves with [`Server::serve`] on a thread of its own.
struct BlockingHarness;

impl Harness for BlockingHarness {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let addr = listener.local_addr().expect("listener address");
        let server = Server::new(service);
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.serve(listener));
        Running::new(
            addr,
            move || handle.shutdown(),
            move || {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            },
        )
    }
}

yuyo_conformance::suite!(BlockingHarness);

/// HTTPS served by the core session's TLS layer over the same sockets (the adapter moves
/// raw bytes; see `yuyo_conformance::tls`), and the plain cases again over TLS.
mod tls {
    yuyo_conformance::tls_suite!(super::BlockingHarness);

    mod over_tls {
        yuyo_conformance::suite_over_tls!(super::super::BlockingHarness);
    }
}
