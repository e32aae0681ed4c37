//! The tower service served by hand with hyper (a bare version of what `yuyo_tower::Server`
//! does for you, without its connection cap, limits and deadlines: see the README), for
//! hosts that run their own hyper accept loop.
//!
//! ```text
//! DISCORD_PUBLIC_KEY=<your application's public key> cargo run -p yuyo-tower --example hyper
//! ```

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use yuyo_core::endpoint::{Endpoint, EndpointConfig, Handlers, Reply, Verifier};
use yuyo_tower::{InteractionService, Service};

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("serving on http://{}/", listener.local_addr()?);

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
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(interactions.clone()),
            );
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.requested() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
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
