//! Demo handlers and the black-box conformance suite every yuyo adapter passes.
//!
//! - [`demo`]: the demo endpoint the suite tests (re-exported from `yuyo-demo`).
//! - [`fixtures`]: the Discord request bodies of `core/fixtures/interactions`.
//! - [`client`]: a small, bounded HTTP/1.1 client over `std::net` for tests.
//! - [`mock_discord`]: a scripted mock Discord REST server and a `CONNECT` proxy, for the
//!   adapters' REST client and bot tests.
//! - [`events_cases`]: the Webhook Events cases (the `/events` path), in [`suite!`] too.
//! - [`cases`]: the conformance cases, each generic over a [`Harness`];
//!   [`suite!`] turns them into one `#[test]` each:
//!
//! ```ignore
//! // adapters/<name>/tests/conformance.rs
//! struct MyHarness;
//! impl yuyo_conformance::Harness for MyHarness {
//!     fn spawn(service: Service, listener: std::net::TcpListener) -> yuyo_conformance::Running {
//!         /* serve on a background thread */
//!     }
//! }
//! yuyo_conformance::suite!(MyHarness);
//! ```
//!
//! The adapters' REST clients and bots share their cases the same way, with the
//! `bot-suites` feature (which the adapters' tests enable; `yuyo serve` does not):
//!
//! - `bot_harness`: `BotHarness`, what an adapter provides to drive its REST client
//!   and bot synchronously (`bot_harness_methods!` writes most of it), and `bounded`.
//! - `bot_cases`: the REST client and bot cases; `bot_suite!` makes a `#[test]` of each.
//! - `pacing_cases`: the REST client against the mock's model of Discord's rate limits
//!   (route buckets, the global limit, absurd waits); also in `bot_suite!`, with an
//!   ignored stress run.
//! - `redis_cases`: a fleet of three replicas sharing rate limits through Redis (and
//!   Redis killed mid-run); in `bot_suite!`, ignored unless `redis-server` is there.
//! - `reply_routing_cases`: replies through REST (deferrals, late replies, oversized
//!   files) end to end; `reply_routing_suite!` makes a `#[test]` of each.
//!
//! With the `tls-suites` feature, `tls` holds a test CA, a TLS client and the HTTPS
//! cases; `tls_suite!` runs them against a [`Harness`] (the core session serves TLS, so
//! every adapter's harness works unchanged).
//!
//! ```ignore
//! // adapters/<name>/tests/bot.rs
//! struct MyBotHarness;
//! impl yuyo_conformance::BotHarness for MyBotHarness {
//!     type Client = RestClient;
//!     type Bot = Bot;
//!     yuyo_conformance::bot_harness_methods!(my_runtime_block_on);
//!     fn serve(bot: &Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError> { /* … */ }
//!     fn sleep(duration: Duration) -> yuyo_conformance::bot_harness::Sleep { /* … */ }
//! }
//! yuyo_conformance::bot_suite!(MyBotHarness);
//! ```
#![deny(missing_docs)]

pub mod attacks;
#[cfg(feature = "bot-suites")]
pub mod bot_cases;
#[cfg(feature = "bot-suites")]
pub mod bot_harness;
pub mod cases;
pub mod client;
pub use yuyo_demo as demo;
pub mod events_cases;
pub mod fixtures;
mod gate;
pub mod mock_discord;
mod mock_validation;
#[cfg(feature = "bot-suites")]
pub mod pacing_cases;
#[cfg(feature = "bot-suites")]
pub mod redis_cases;
#[cfg(feature = "bot-suites")]
pub mod reply_routing_cases;
#[cfg(feature = "tls-suites")]
pub mod tls;

use std::net::{SocketAddr, TcpListener};

use yuyo_core::service::{ServeError, Service};

#[cfg(feature = "bot-suites")]
pub use bot_harness::{BotHarness, ServedBot};
pub use gate::Gate;
/// `http`, for the paths in [`bot_harness_methods!`].
#[doc(hidden)]
pub use http as __http;
/// `yuyo-core`, for the paths in [`bot_harness_methods!`].
#[doc(hidden)]
pub use yuyo_core as __yuyo_core;

/// What an adapter provides to run the suite against it.
pub trait Harness {
    /// Serves `service` on `listener` (already bound to `127.0.0.1:0`) on a background
    /// thread and returns at once. [`Running::stop`] requests a graceful shutdown and
    /// joins, returning what serving returned.
    fn spawn(service: Service, listener: TcpListener) -> Running;
}

type Trigger = Box<dyn FnOnce() + Send>;
type Join = Box<dyn FnOnce() -> Result<(), ServeError> + Send>;

/// A server started by a [`Harness`]: its address, a shutdown trigger and a join.
///
/// Dropping it without joining triggers the shutdown (so a failed test does not leave a
/// server behind) but does not wait for it.
pub struct Running {
    /// The address the server listens on.
    pub addr: SocketAddr,
    trigger: Option<Trigger>,
    join: Option<Join>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// A running server at `addr`: `trigger` requests a graceful shutdown (it must not
    /// block), `join` waits for serving to end and returns its result.
    pub fn new(
        addr: SocketAddr,
        trigger: impl FnOnce() + Send + 'static,
        join: impl FnOnce() -> Result<(), ServeError> + Send + 'static,
    ) -> Self {
        Self {
            addr,
            trigger: Some(Box::new(trigger)),
            join: Some(Box::new(join)),
        }
    }

    /// Requests a graceful shutdown (once; later calls do nothing).
    pub fn trigger_shutdown(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger();
        }
    }

    /// Waits for serving to end, without requesting it.
    pub fn join(mut self) -> Result<(), ServeError> {
        // The server ends on its own (startup failure) or after `trigger_shutdown`; a
        // trigger left here is dropped unused.
        self.trigger = None;
        match self.join.take() {
            Some(join) => join(),
            None => Ok(()),
        }
    }

    /// Requests a graceful shutdown and waits for it: [`Running::trigger_shutdown`] then
    /// [`Running::join`].
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.trigger_shutdown();
        self.join()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Expands to one `#[test]` per conformance case (see [`cases`]) for the [`Harness`]
/// `$harness`.
#[macro_export]
macro_rules! suite {
    ($harness:ty) => {
        $crate::__transport_cases!($harness);
        $crate::__tests!(cases, $harness;
            status_413_declared_length_with_body_in_flight,
        );
        $crate::__tests!(events_cases, $harness;
            events_ping_204,
            events_fixtures_204,
            events_checks,
            events_path_off_404,
            events_handler_runs_after_the_response,
            events_failing_handlers_still_204,
            events_shutdown_waits_for_the_handler,
        );
        $crate::__tests!(attacks, $harness;
            non_reading_pipeliners_do_not_starve,
            stalled_bodies_at_the_cap_do_not_starve,
            stalled_heads_at_the_cap_do_not_starve,
            eviction_spares_busy_connections,
        );
    };
}

/// Expands to one `#[test]` per REST client and bot case (see [`bot_cases`]) and per
/// pacing case (see [`pacing_cases`]) for the [`BotHarness`] `$harness`, plus the
/// ignored `global_limit_is_never_exceeded_stress` (run it with `-- --ignored`).
#[cfg(feature = "bot-suites")]
#[macro_export]
macro_rules! bot_suite {
    ($harness:ty) => {
        $crate::__tests!(bot_cases, $harness;
            token_header_user_agent_and_keep_alive,
            bucket_is_learned_and_waited_for,
            route_429_is_waited_out,
            global_429_is_waited_out,
            max_rate_limit_exceeded_is_an_error,
            retries_are_exhausted_on_5xx,
            dropped_connection_is_retried_and_slow_answer_times_out,
            multipart_upload,
            tls_with_a_custom_ca,
            proxy_connect_with_basic_auth,
            public_key_discovery_bot_token,
            public_key_discovery_bearer_token_single_flight,
            bad_public_key_hex_fails_construction,
            managed_bot_refuses_manual_lifecycle,
            managed_bot_runs_with_the_server_lifespan,
            unmanaged_start_twice_is_an_error,
            unmanaged_close_when_stopped_is_an_error,
            unmanaged_run_until_closed,
            removing_an_unknown_callback_is_an_error,
            bot_syncs_commands,
        );
        $crate::__tests!(pacing_cases, $harness;
            followups_on_a_sliding_bucket_pace_exactly,
            edits_after_followups_are_not_delayed,
            followups_on_a_fixed_window_bucket_pace,
            global_limit_is_never_exceeded,
            absurd_retry_after_is_a_typed_error_and_the_next_call_works,
        );

        #[test]
        #[ignore = "needs redis-server"]
        fn redis_fleet_shares_the_global_limit_and_buckets() {
            $crate::redis_cases::redis_fleet_shares_the_global_limit_and_buckets::<$harness>();
        }

        #[test]
        #[ignore = "needs redis-server"]
        fn redis_stalled_costs_one_deadline() {
            $crate::redis_cases::redis_stalled_costs_one_deadline::<$harness>();
        }

        #[test]
        #[ignore = "needs redis-server"]
        fn redis_holds_reach_every_replica() {
            $crate::redis_cases::redis_holds_reach_every_replica::<$harness>();
        }

        #[test]
        #[ignore = "needs redis-server"]
        fn redis_killed_mid_run_falls_back_to_local_limits() {
            $crate::redis_cases::redis_killed_mid_run_falls_back_to_local_limits::<$harness>();
        }

        #[test]
        #[ignore = "stress: 100 runs of global_limit_is_never_exceeded, about 5 minutes"]
        fn global_limit_is_never_exceeded_stress() {
            $crate::pacing_cases::global_limit_is_never_exceeded_stress::<$harness>();
        }
    };
}

/// Expands to one `#[test]` per reply-routing case (see [`reply_routing_cases`]) for
/// the [`BotHarness`] `$harness`.
#[cfg(feature = "bot-suites")]
#[macro_export]
macro_rules! reply_routing_suite {
    ($harness:ty) => {
        $crate::__tests!(reply_routing_cases, $harness;
            slow_command_is_deferred_and_its_reply_patches_the_original,
            slow_component_is_deferred_with_type_6,
            autocomplete_is_never_deferred,
            handler_error_after_deferral_deletes_the_deferred_message,
            oversized_file_goes_through_the_callback_endpoint,
            streamed_upload_from_disk_arrives_intact,
            bot_serves_webhook_events,
        );
    };
}

/// Expands to one `#[test]` per HTTPS case (see [`tls`]) for the [`Harness`] `$harness`:
/// the core session's TLS layer over the adapter's sockets.
#[cfg(feature = "tls-suites")]
#[macro_export]
macro_rules! tls_suite {
    ($harness:ty) => {
        $crate::__tests!(tls, $harness;
            ping_over_tls,
            command_over_tls,
            keep_alive_over_tls,
            alpn_is_http11,
            close_sends_close_notify,
            stalled_handshake_is_cut_at_the_head_deadline,
            plaintext_on_a_tls_port_is_closed,
            untrusted_client_fails_without_harm,
            reload_keeps_open_connections_and_serves_the_new_certificate,
            stalled_handshakes_at_the_cap_do_not_starve,
        );
    };
}

/// Expands to one `#[test]` per conformance case that runs unchanged over TLS, for the
/// [`Harness`] `$harness` serving HTTPS (`tls::OverTls`): every case whose clients
/// connect with `client::Client::connect`.
#[cfg(feature = "tls-suites")]
#[macro_export]
macro_rules! suite_over_tls {
    ($harness:ty) => {
        $crate::__transport_cases!($crate::tls::OverTls<$harness>);
    };
}

/// One `#[test]` per [`cases`] case that holds over any transport, for `$harness`:
/// [`suite!`] runs them in plain HTTP and `suite_over_tls!` over TLS, so a case added
/// here runs on both.
#[doc(hidden)]
#[macro_export]
macro_rules! __transport_cases {
    ($harness:ty) => {
        $crate::__tests!(cases, $harness;
            status_404_not_found,
            status_405_method_not_allowed,
            status_415_unsupported_media_type,
            status_401_signature_headers,
            status_400_content_length,
            status_413_declared_length_without_body,
            status_413_streamed_chunked_body,
            status_400_empty_body,
            status_401_bad_signature,
            status_400_not_json,
            status_400_bad_type,
            status_200_ping,
            status_501_unknown_type,
            status_501_no_handler,
            status_500_unreadable_interaction,
            demo_none_204,
            demo_echo_200,
            demo_echo_default_text,
            demo_ephemeral,
            demo_defer,
            demo_file_multipart,
            demo_boom_500,
            demo_autocomplete,
            demo_button,
            demo_modal,
            unknown_command,
            pipelined_requests_in_order,
            concurrent_mixed_signatures,
            expect_100_continue,
            chunked_request_body,
            body_timeout_408,
            idle_connections_do_not_starve,
            silent_flood_at_the_cap_does_not_starve,
            startup_failure,
            lifespan_order,
            shutdown_callback_failure,
            graceful_shutdown_finishes_in_flight,
            health_503_during_the_drain_period,
            panicking_handler_500_then_next_request,
            after_work_runs_after_response,
            shutdown_waits_for_after_work,
            file_from_disk_known_length,
            file_from_disk_unknown_length,
            file_from_disk_missing_closes,
        );
    };
}

/// One `#[test]` per case `$case` of module `$module`, for `$harness` (the suites'
/// expansion).
#[doc(hidden)]
#[macro_export]
macro_rules! __tests {
    ($module:ident, $harness:ty; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::$module::$case::<$harness>();
            }
        )+
    };
}
