//! The [`BotHarness`] of yuyo-smol: every call blocks on it with `async_io::block_on`;
//! a bot's server serves on its own executor (two threads) from a thread of its own.

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::time::Duration;

use async_io::{Timer, block_on};
use yuyo_conformance::bot_harness::Sleep;
use yuyo_conformance::{BotHarness, ServedBot};
use yuyo_smol::bot::{Bot, LifecycleError};
use yuyo_smol::rest::RestClient;

pub struct SmolHarness;

impl BotHarness for SmolHarness {
    type Client = RestClient;
    type Bot = Bot;

    yuyo_conformance::bot_harness_methods!(block_on);

    fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> {
        let server = block_on(bot.server())?;
        let reply_routing = server.reply_routing();
        let server = server.with_threads(NonZeroUsize::new(2).expect("non-zero"));
        let addr = listener.local_addr().expect("local address");
        let listener = async_net::TcpListener::try_from(listener).expect("async listener");
        let handle = server.shutdown_handle();
        Ok(ServedBot::on_thread(
            addr,
            reply_routing,
            move || handle.shutdown(),
            move || block_on(server.serve(listener)),
        ))
    }

    fn sleep(duration: Duration) -> Sleep {
        Box::pin(async move {
            Timer::after(duration).await;
        })
    }
}
