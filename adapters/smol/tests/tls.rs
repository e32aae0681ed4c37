//! HTTPS served by the core session's TLS layer over yuyo-smol's sockets (the adapter
//! moves raw bytes; see `yuyo_conformance::tls`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::num::NonZeroUsize;

use yuyo_conformance::{Harness, Running};
use yuyo_smol::{Server, Service};

/// Serves on the server's own executor (two threads) from a background thread.
struct SmolHarness;

impl Harness for SmolHarness {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let addr = listener.local_addr().expect("local address");
        let listener = async_net::TcpListener::try_from(listener).expect("async listener");
        let threads = NonZeroUsize::new(2).expect("non-zero");
        let server = Server::new(service).with_threads(threads);
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || async_io::block_on(server.serve(listener)));
        Running::new(
            addr,
            move || handle.shutdown(),
            move || thread.join().expect("the serving thread panicked"),
        )
    }
}

yuyo_conformance::tls_suite!(SmolHarness);

/// The plain conformance cases, unchanged, over TLS.
mod over_tls {
    yuyo_conformance::suite_over_tls!(super::SmolHarness);
}
