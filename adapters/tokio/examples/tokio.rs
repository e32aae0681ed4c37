//! A Discord interactions endpoint on tokio.
//!
//! ```text
//! DISCORD_PUBLIC_KEY=<your application's public key> cargo run -p yuyo-tokio --example tokio
//! ```
//! Without `DISCORD_PUBLIC_KEY` it uses the public test key of the yuyo fixtures. Ctrl-C
//! (or SIGTERM) shuts it down gracefully.

use yuyo_core::endpoint::{Endpoint, EndpointConfig, Handlers, Reply, Verifier};
use yuyo_tokio::{ServeOptions, Server, Service};

/// The public key of the yuyo test identity (never a real application's key).
const TEST_PUBLIC_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("DISCORD_PUBLIC_KEY").unwrap_or_else(|_| TEST_PUBLIC_KEY.to_owned());
    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async { Ok(Some(Reply::message("pong!"))) })?
        .set_component(|_ctx| async { Ok(Some(Reply::update_message("clicked"))) })?;
    let endpoint = Endpoint::new(EndpointConfig::new(Verifier::from_hex(&key)?), handlers);

    let options = ServeOptions {
        handle_signals: true,
        ..ServeOptions::default()
    };
    let service = Service::new(endpoint)
        .with_options(options)
        .with_startup_callback(|| async {
            println!("starting up");
            Ok(())
        })
        .with_shutdown_callback(|| async {
            println!("shut down");
            Ok(())
        });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("serving on http://{}/", listener.local_addr()?);
    Server::new(service).serve(listener).await?;
    Ok(())
}
