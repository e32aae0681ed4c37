//! The smol REST client and bot against the mock Discord of `yuyo-conformance` on
//! 127.0.0.1: the shared cases of `yuyo_conformance::bot_cases`, and a managed bot
//! serving on the executor it was given. Every test is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use std::future::Future;
use std::sync::Arc;

use async_io::Timer;
use futures_lite::future;
use yuyo_conformance::bot_harness::LIMIT;
use yuyo_smol::bot::Bot;

yuyo_conformance::bot_suite!(harness::SmolHarness);

/// Runs `f` to completion, failing the test if it takes longer than `LIMIT`.
fn bounded<F: Future>(f: F) -> F::Output {
    async_io::block_on(future::or(f, async {
        Timer::after(LIMIT).await;
        panic!("test took too long")
    }))
}

#[test]
fn managed_bot_serves_on_the_given_executor() {
    use yuyo_conformance::client::{Client, Request};
    use yuyo_conformance::{demo, fixtures};

    let executor = Arc::new(async_executor::Executor::new());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let runner = Arc::clone(&executor);
    let worker = std::thread::spawn(move || {
        async_io::block_on(runner.run(async {
            let _ = stop_rx.recv().await;
        }));
    });
    let bot = Bot::builder("tok")
        .public_key_hex(demo::DEMO_PUBLIC_KEY_HEX)
        .executor(Arc::clone(&executor))
        .build()
        .unwrap();
    assert!(bot.executor().is_some());
    let observer = bot.clone();
    bounded(async {
        let server = bot.server().await.unwrap();
        let handle = server.shutdown_handle();
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = blocking::unblock(move || {
            let mut client = Client::connect(addr).unwrap();
            let status = client
                .roundtrip(&Request::signed(fixtures::PING))
                .unwrap()
                .status;
            let alive = observer.is_alive();
            handle.shutdown();
            (status, alive)
        });
        let (served, (status, alive)) = future::zip(server.serve(listener), client).await;
        served.unwrap();
        assert_eq!(status, 200);
        assert!(alive, "the lifespan started the bot before serving");
    });
    assert!(!bot.is_alive());
    drop(stop_tx);
    worker.join().unwrap();
}
