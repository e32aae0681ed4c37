//! The [`BotHarness`] of yuyo-tokio: every call blocks on one shared multi-thread
//! runtime, on which the bot's servers are spawned too.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;
use yuyo_conformance::bot_harness::Sleep;
use yuyo_conformance::{BotHarness, Running, ServedBot};
use yuyo_core::rest::{RequestBody, RequestError, RestError, RestRequest};
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

pub struct TokioHarness;

impl BotHarness for TokioHarness {
    type Client = RestClient;
    type Bot = Bot;

    yuyo_conformance::bot_harness_sync_methods!();

    fn request(
        client: &RestClient,
        method: http::Method,
        path: &str,
        body: RequestBody,
    ) -> Result<(), RequestError> {
        runtime()
            .block_on(client.request(method, path, body))
            .map(drop)
    }

    fn call<T: Send + 'static>(
        client: &RestClient,
        request: RestRequest<T>,
    ) -> Result<(), RestError> {
        runtime().block_on(client.call(request)).map(drop)
    }

    fn start(bot: &Bot) -> Result<(), LifecycleError> {
        runtime().block_on(bot.start())
    }

    fn close(bot: &Bot) -> Result<(), LifecycleError> {
        runtime().block_on(bot.close())
    }

    fn join(bot: &Bot) -> Result<(), LifecycleError> {
        runtime().block_on(bot.join())
    }

    fn run(bot: &Bot) -> Result<(), LifecycleError> {
        runtime().block_on(bot.run())
    }

    fn server(bot: &Bot) -> Result<(), LifecycleError> {
        runtime().block_on(bot.server()).map(drop)
    }

    fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> {
        let server = runtime().block_on(bot.server())?;
        let reply_routing = server.reply_routing();
        let handle = server.shutdown_handle();
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let serving = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            server.serve(listener).await
        });
        let running = Running::new(
            addr,
            move || handle.shutdown(),
            move || runtime().block_on(serving).expect("serving panicked"),
        );
        Ok(ServedBot {
            running,
            reply_routing,
        })
    }

    fn sleep(duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}
