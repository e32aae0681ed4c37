//! The [`BotHarness`] of yuyo-blocking: plain calls; a bot's server serves on a thread
//! of its own. The shared handlers wait with an `async_io` timer.

use std::convert::identity;
use std::net::TcpListener;
use std::time::Duration;

use async_io::Timer;
use yuyo_blocking::bot::{Bot, LifecycleError};
use yuyo_blocking::rest::RestClient;
use yuyo_conformance::bot_harness::Sleep;
use yuyo_conformance::{BotHarness, ServedBot};

pub struct BlockingHarness;

impl BotHarness for BlockingHarness {
    type Client = RestClient;
    type Bot = Bot;

    yuyo_conformance::bot_harness_methods!(identity);

    fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> {
        let server = bot.server()?;
        let addr = listener.local_addr().expect("local address");
        let handle = server.shutdown_handle();
        Ok(ServedBot::on_thread(
            addr,
            server.reply_routing(),
            move || handle.shutdown(),
            move || server.serve(listener),
        ))
    }

    fn sleep(duration: Duration) -> Sleep {
        Box::pin(async move {
            Timer::after(duration).await;
        })
    }
}
