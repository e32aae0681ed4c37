//! The conformance suite, run against `yuyo-smol`: on the server's own executor, and on
//! an executor the caller runs (`Server::serve_on`, one thread).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::sync::Arc;

use async_executor::Executor;
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

yuyo_conformance::suite!(SmolHarness);

/// Serves with `serve_on` on a user executor that one thread runs, the accept loop
/// included (`executor.run(serve_on(..))`).
struct UserExecutorHarness;

impl Harness for UserExecutorHarness {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let addr = listener.local_addr().expect("local address");
        let listener = async_net::TcpListener::try_from(listener).expect("async listener");
        let server = Server::new(service);
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            let executor = Arc::new(Executor::new());
            async_io::block_on(executor.run(server.serve_on(&executor, listener)))
        });
        Running::new(
            addr,
            move || handle.shutdown(),
            move || thread.join().expect("the serving thread panicked"),
        )
    }
}

mod user_executor {
    yuyo_conformance::suite!(super::UserExecutorHarness);
}

/// HTTPS served by the core session's TLS layer over the same sockets (the adapter moves
/// raw bytes; see `yuyo_conformance::tls`), and the plain cases again over TLS.
mod tls {
    yuyo_conformance::tls_suite!(super::SmolHarness);

    mod over_tls {
        yuyo_conformance::suite_over_tls!(super::super::SmolHarness);
    }
}
