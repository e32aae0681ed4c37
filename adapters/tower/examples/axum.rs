//! The interaction endpoint mounted in an axum app at `/interactions`.
//!
//! ```text
//! DISCORD_PUBLIC_KEY=<your application's public key> cargo run -p yuyo-tower --example axum
//! ```
//! Give Discord `https://<your host>/interactions` as the interactions endpoint URL.
//! `nest_service` strips the `/interactions` prefix, so the endpoint keeps its default
//! path `/`.

use axum::Router;
use axum::routing::get;
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
    let service = Service::new(endpoint).with_startup_callback(|| async {
        println!("interactions starting up");
        Ok(())
    });
    let interactions = InteractionService::new(service);

    let app = Router::new()
        .route("/", get(|| async { "hello from axum" }))
        .nest_service("/interactions", interactions.clone());

    interactions.start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!(
        "interactions at http://{}/interactions",
        listener.local_addr()?
    );

    let shutdown = interactions.shutdown_handle();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shutdown.shutdown();
            }
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(interactions.shutdown_requested())
        .await?;
    // Waits for after-response work, then runs the shutdown callbacks.
    interactions.close().await?;
    Ok(())
}
