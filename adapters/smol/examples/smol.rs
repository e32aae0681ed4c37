//! Serves the demo endpoint with `yuyo-smol` on 127.0.0.1:8080 until Ctrl-C.
//!
//! `cargo run -p yuyo-smol --example smol`, then try it with `yuyo sign` and curl.

use yuyo_demo as demo;
use yuyo_smol::{Server, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut service: Service = demo::demo_service(demo::demo_verifier());
    service.options_mut().handle_signals = true;
    async_io::block_on(async {
        let listener = async_net::TcpListener::bind("127.0.0.1:8080").await?;
        println!("listening on http://{}", listener.local_addr()?);
        Server::new(service).serve(listener).await?;
        Ok(())
    })
}
