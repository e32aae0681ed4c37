//! The demo endpoint on std threads: `cargo run -p yuyo-blocking --example blocking`.
//!
//! Serves on 127.0.0.1:8080 with the demo key (see `yuyo_demo`); Ctrl-C
//! shuts it down gracefully.

use std::net::TcpListener;

use yuyo_blocking::{ServeOptions, Server};
use yuyo_demo as demo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = demo::demo_service(demo::demo_verifier()).with_options(ServeOptions {
        handle_signals: true,
        ..ServeOptions::default()
    });
    let listener = TcpListener::bind("127.0.0.1:8080")?;
    println!(
        "serving the demo endpoint on http://{} (public key {})",
        listener.local_addr()?,
        demo::DEMO_PUBLIC_KEY_HEX
    );
    Server::new(service).serve(listener)?;
    Ok(())
}
