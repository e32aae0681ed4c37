//! The tower service served by hand with hyper (a bare version of what `yuyo_tower::Server`
//! does for you, without its connection cap, limits and deadlines: see the README), for
//! hosts that run their own hyper accept loop.
//!
//! ```text
//! DISCORD_PUBLIC_KEY=<your application's public key> cargo run -p yuyo-tower --example hyper
//! ```
//!
//! yuyo-tower serves under its host's TLS: with `TLS_CERT` and `TLS_KEY` (PEM files) set,
//! this example terminates HTTPS with tokio-rustls in front of the service (ALPN
//! `http/1.1`), as a host would.

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use yuyo_core::endpoint::{Endpoint, EndpointConfig, Handlers, Reply, Verifier};
use yuyo_tower::{InteractionService, Service, ShutdownHandle};

/// The public key of the yuyo test identity (never a real application's key).
const TEST_PUBLIC_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("DISCORD_PUBLIC_KEY").unwrap_or_else(|_| TEST_PUBLIC_KEY.to_owned());
    let mut handlers = Handlers::new();
    handlers.set_command(|_ctx| async { Ok(Some(Reply::message("pong!"))) })?;
    let endpoint = Endpoint::new(EndpointConfig::new(Verifier::from_hex(&key)?), handlers);
    let interactions = InteractionService::new(Service::new(endpoint));

    // Startup callbacks first: until this returns, requests would get 503.
    interactions.start().await?;
    let tls = tls_from_env()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("serving on {scheme}://{}/", listener.local_addr()?);

    let shutdown = interactions.shutdown_handle();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shutdown.shutdown();
            }
        }
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.requested() => break,
            accepted = listener.accept() => accepted?,
        };
        let (interactions, shutdown, tls) = (interactions.clone(), shutdown.clone(), tls.clone());
        connections.spawn(async move {
            match tls {
                // A failed handshake is that client's problem: the connection is dropped.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve(stream, interactions, shutdown).await;
                    }
                }
                None => serve(stream, interactions, shutdown).await,
            }
        });
    }
    drop(listener);
    // Connections finish their requests in flight; then after-response work and the
    // shutdown callbacks (within the grace period).
    while connections.join_next().await.is_some() {}
    interactions.close().await?;
    Ok(())
}

/// Serves one connection with hyper until it ends, or gracefully once shutdown begins.
async fn serve<S>(stream: S, interactions: InteractionService, shutdown: ShutdownHandle)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(interactions));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = shutdown.requested() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The host's TLS, when `TLS_CERT` and `TLS_KEY` name PEM files.
fn tls_from_env() -> Result<Option<TlsAcceptor>, Box<dyn std::error::Error>> {
    let (Ok(cert), Ok(key)) = (std::env::var("TLS_CERT"), std::env::var("TLS_KEY")) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, PrivateKeyDer::from_pem_file(key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
