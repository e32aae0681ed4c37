//! The [`BotHarness`] of yuyo-blocking: plain calls; a bot's server serves on a thread
//! of its own. The shared handlers wait with an `async_io` timer.

use std::net::TcpListener;
use std::time::Duration;

use async_io::Timer;
use yuyo_blocking::bot::{Bot, LifecycleError};
use yuyo_blocking::rest::RestClient;
use yuyo_conformance::bot_harness::Sleep;
use yuyo_conformance::{BotHarness, Running, ServedBot};
use yuyo_core::rest::{RequestBody, RequestError, RestError, RestRequest};

pub struct BlockingHarness;

impl BotHarness for BlockingHarness {
    type Client = RestClient;
    type Bot = Bot;

    yuyo_conformance::bot_harness_sync_methods!();

    fn request(
        client: &RestClient,
        method: http::Method,
        path: &str,
        body: RequestBody,
    ) -> Result<(), RequestError> {
        client.request(method, path, body).map(drop)
    }

    fn call<T: Send + 'static>(
        client: &RestClient,
        request: RestRequest<T>,
    ) -> Result<(), RestError> {
        client.call(request).map(drop)
    }

    fn start(bot: &Bot) -> Result<(), LifecycleError> {
        bot.start()
    }

    fn close(bot: &Bot) -> Result<(), LifecycleError> {
        bot.close()
    }

    fn join(bot: &Bot) -> Result<(), LifecycleError> {
        bot.join()
    }

    fn run(bot: &Bot) -> Result<(), LifecycleError> {
        bot.run()
    }

    fn server(bot: &Bot) -> Result<(), LifecycleError> {
        bot.server().map(drop)
    }

    fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> {
        let server = bot.server()?;
        let reply_routing = server.reply_routing();
        let handle = server.shutdown_handle();
        let addr = listener.local_addr().expect("local address");
        let serving = std::thread::spawn(move || server.serve(listener));
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
