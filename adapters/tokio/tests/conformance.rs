//! The conformance suite, run against `yuyo-tokio` on a multi-thread runtime, on a
//! current-thread runtime, and with connections on a runtime of their own.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;

use yuyo_conformance::{Harness, Running};
use yuyo_tokio::{Server, Service};

/// Serves `service` on `runtime`, from a background thread.
fn spawn_on(runtime: tokio::runtime::Runtime, service: Service, listener: TcpListener) -> Running {
    spawn_with(runtime, Server::new(service), listener, None)
}

/// Serves with `server` on `runtime` from a background thread; `workers` (the runtime
/// given to `Server::with_runtime`, if any) is shut down once serving ended.
fn spawn_with(
    runtime: tokio::runtime::Runtime,
    server: Server,
    listener: TcpListener,
    workers: Option<tokio::runtime::Runtime>,
) -> Running {
    let addr = listener.local_addr().expect("local address");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        let result = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            server.serve(listener).await
        });
        if let Some(workers) = workers {
            workers.shutdown_background();
        }
        result
    });
    Running::new(
        addr,
        move || handle.shutdown(),
        move || thread.join().expect("the serving thread panicked"),
    )
}

/// A two-worker multi-thread runtime.
struct MultiThread;

impl Harness for MultiThread {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        spawn_on(runtime, service, listener)
    }
}

/// A current-thread runtime: everything on the serving thread.
struct CurrentThread;

impl Harness for CurrentThread {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        spawn_on(runtime, service, listener)
    }
}

/// Accepts on a current-thread runtime, runs connections on another runtime
/// ([`Server::with_runtime`]).
struct OtherRuntime;

impl Harness for OtherRuntime {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let accepting = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let workers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = Server::new(service).with_runtime(workers.handle().clone());
        spawn_with(accepting, server, listener, Some(workers))
    }
}

mod multi_thread {
    use super::MultiThread;
    yuyo_conformance::suite!(MultiThread);
}

mod current_thread {
    use super::CurrentThread;
    yuyo_conformance::suite!(CurrentThread);
}

mod other_runtime {
    use super::OtherRuntime;
    yuyo_conformance::suite!(OtherRuntime);
}

/// HTTPS served by the core session's TLS layer over the same sockets (the adapter moves
/// raw bytes; see `yuyo_conformance::tls`), and the plain cases again over TLS.
mod tls {
    yuyo_conformance::tls_suite!(super::MultiThread);

    mod over_tls {
        yuyo_conformance::suite_over_tls!(super::super::MultiThread);
    }
}
