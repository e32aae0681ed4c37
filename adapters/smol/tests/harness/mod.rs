//! The [`BotHarness`] of yuyo-smol: every call blocks on it with `async_io::block_on`;
//! a bot's server serves on its own executor (two threads) from a thread of its own.

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::time::Duration;

use async_io::{Timer, block_on};
use yuyo_conformance::bot_harness::Sleep;
use yuyo_conformance::{BotHarness, Running, ServedBot};
use yuyo_core::rest::{RequestBody, RequestError, RestError, RestRequest};
use yuyo_smol::bot::{Bot, LifecycleError};
use yuyo_smol::rest::RestClient;

pub struct SmolHarness;

impl BotHarness for SmolHarness {
    type Client = RestClient;
    type Bot = Bot;

    yuyo_conformance::bot_harness_sync_methods!();

    fn request(
        client: &RestClient,
        method: http::Method,
        path: &str,
        body: RequestBody,
    ) -> Result<(), RequestError> {
        block_on(client.request(method, path, body)).map(drop)
    }

    fn call<T: Send + 'static>(
        client: &RestClient,
        request: RestRequest<T>,
    ) -> Result<(), RestError> {
        block_on(client.call(request)).map(drop)
    }

    fn start(bot: &Bot) -> Result<(), LifecycleError> {
        block_on(bot.start())
    }

    fn close(bot: &Bot) -> Result<(), LifecycleError> {
        block_on(bot.close())
    }

    fn join(bot: &Bot) -> Result<(), LifecycleError> {
        block_on(bot.join())
    }

    fn run(bot: &Bot) -> Result<(), LifecycleError> {
        block_on(bot.run())
    }

    fn server(bot: &Bot) -> Result<(), LifecycleError> {
        block_on(bot.server()).map(drop)
    }

    fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> {
        let server = block_on(bot.server())?;
        let reply_routing = server.reply_routing();
        let server = server.with_threads(NonZeroUsize::new(2).expect("non-zero"));
        let handle = server.shutdown_handle();
        let addr = listener.local_addr().expect("local address");
        let listener = async_net::TcpListener::try_from(listener).expect("async listener");
        let serving = std::thread::spawn(move || block_on(server.serve(listener)));
        let running = Running::new(
            addr,
            move || handle.shutdown(),
            move || serving.join().expect("the serving thread panicked"),
        );
        Ok(ServedBot {
            running,
            reply_routing,
        })
    }

    fn sleep(duration: Duration) -> Sleep {
        Box::pin(async move {
            Timer::after(duration).await;
        })
    }
}
