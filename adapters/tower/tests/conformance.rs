//! The conformance suite, run against the tower service served by hyper
//! (`yuyo_tower::Server`, hyper's HTTP/1.1 server on a multi-thread tokio runtime).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;

use yuyo_conformance::{Harness, Running};
use yuyo_tower::{Server, Service};

/// `yuyo_tower::Server` (hyper http1) on a two-worker tokio runtime.
struct HyperHarness;

impl Harness for HyperHarness {
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
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
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

yuyo_conformance::suite!(HyperHarness);
