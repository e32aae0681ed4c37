//! The [`BotHarness`] of yuyo-tokio: every call blocks on one shared multi-thread
//! runtime, on which the bot's servers are spawned too.

use std::future::Future;
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;
use yuyo_conformance::bot_harness::Sleep;
use yuyo_conformance::{BotHarness, ServedBot};
use yuyo_tokio::bot::{Bot, LifecycleError};
use yuyo_tokio::rest::RestClient;

/// The runtime the cases block on (two workers, so a case's concurrent steps overlap).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

pub struct TokioHarness;

impl BotHarness for TokioHarness {
    type Client = RestClient;
    type Bot = Bot;

    yuyo_conformance::bot_harness_methods!(block_on);

    fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> {
        let server = block_on(bot.server())?;
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let handle = server.shutdown_handle();
        Ok(ServedBot::on_thread(
            addr,
            server.reply_routing(),
            move || handle.shutdown(),
            move || {
                block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    server.serve(listener).await
                })
            },
        ))
    }

    fn sleep(duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}
