//! HTTPS served by the core session's TLS layer over yuyo-tokio's sockets (the adapter
//! moves raw bytes; see `yuyo_conformance::tls`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;

use yuyo_conformance::{Harness, Running};
use yuyo_tokio::{Server, Service};

/// Serves on a two-worker multi-thread runtime, from a background thread.
struct TokioHarness;

impl Harness for TokioHarness {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = Server::new(service);
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                server.serve(listener).await
            })
        });
        Running::new(
            addr,
            move || handle.shutdown(),
            move || thread.join().expect("the serving thread panicked"),
        )
    }
}

yuyo_conformance::tls_suite!(TokioHarness);

/// The plain conformance cases, unchanged, over TLS.
mod over_tls {
    yuyo_conformance::suite_over_tls!(super::TokioHarness);
}
