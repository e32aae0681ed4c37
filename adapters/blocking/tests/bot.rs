//! The blocking REST client and bot against the mock Discord of `yuyo-conformance` on
//! 127.0.0.1: the shared cases of `yuyo_conformance::bot_cases`, and a managed bot
//! serving an interaction.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use std::thread;

use yuyo_blocking::bot::Bot;
use yuyo_conformance::bot_harness::bounded;

yuyo_conformance::bot_suite!(harness::BlockingHarness);

#[test]
fn managed_bot_serves_interactions() {
    use yuyo_conformance::client::{Client, Request};
    use yuyo_conformance::{demo, fixtures};

    let bot = Bot::builder("tok")
        .public_key_hex(demo::DEMO_PUBLIC_KEY_HEX)
        .build()
        .unwrap();
    let server = bot.server().unwrap();
    let handle = server.shutdown_handle();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = thread::spawn(move || server.serve(listener));
    let observer = bot.clone();
    let (status, alive) = bounded(move || {
        let mut client = Client::connect(addr).unwrap();
        let status = client
            .roundtrip(&Request::signed(fixtures::PING))
            .unwrap()
            .status;
        (status, observer.is_alive())
    });
    handle.shutdown();
    bounded(move || serving.join().unwrap()).unwrap();
    assert_eq!(status, 200);
    assert!(alive, "the lifespan started the bot before serving");
    assert!(!bot.is_alive());
}
