//! Metrics through the facade of the `metrics` crate: what the core counts, with no clock
//! read (every duration is the difference of two [`Instant`]s the driver passed in).
//!
//! Nothing is recorded unless the application installs a recorder (e.g.
//! `metrics-exporter-prometheus`; `yuyo serve --metrics ADDR` does). Install it before
//! building the [`Endpoint`](crate::endpoint::Endpoint) and the
//! [`Slots`](crate::server::Slots): the hot paths resolve their handles once (when the
//! slots are built, or the first time a label set is used) and keep them, so a request
//! costs an atomic load per metric and, with no recorder, nothing more.
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `yuyo_http_requests_total` | counter | `kind`, `status` | HTTP requests answered, by [`RequestKind`] and response status |
//! | `yuyo_http_request_duration_seconds` | histogram | `kind` | from the request's head to its response being queued |
//! | `yuyo_handler_duration_seconds` | histogram | `kind` | from dispatch to the handler's outcome (interaction kinds only) |
//! | `yuyo_verify_batch_size` | histogram | | signatures verified together by one run of the verify queue |
//! | `yuyo_verify_failures_total` | counter | | requests whose Ed25519 signature did not verify |
//! | `yuyo_verify_failed_batches_total` | counter | | batches whose combined equation failed (each signature then checked alone) |
//! | `yuyo_connections_open` | gauge | | connections holding a slot now |
//! | `yuyo_connection_evictions_total` | counter | | connections evicted at the connection cap |
//! | `yuyo_rest_requests_total` | counter | `method`, `route`, `status` | REST answers (or `status="error"` for a transport failure), by route template (never ids or tokens) |
//! | `yuyo_rest_rate_limited_total` | counter | `scope` | REST 429s, by scope: `global`, `user`, `shared` or `unknown` |
//! | `yuyo_rest_wait_seconds` | histogram | `reason` | how long a call waited before it was sent, by the reason of its first wait: `bucket`, `global`, `pending`, `retry`, `retry_after` |
//!
//! `kind` is one of `ping`, `command`, `component`, `autocomplete`, `modal`, `event`
//! (Webhook Events, their PING included), `health` (for a health endpoint's requests) and
//! `rejected` (refused before dispatch: bad path, method, headers or signature, unknown
//! type, no handler).
//!
//! [`describe`] registers the descriptions (the exporter's `# HELP` lines);
//! [`SECONDS_BUCKETS`] and [`BATCH_BUCKETS`] are bucket bounds that fit the histograms.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::endpoint::{Immediate, InteractionKind};
use crate::rest::{RateLimited, RouteKey, Scope, WaitReason};

/// `yuyo_http_requests_total`: HTTP requests answered, by `kind` and `status`.
pub const HTTP_REQUESTS: &str = "yuyo_http_requests_total";
/// `yuyo_http_request_duration_seconds`: head to response, by `kind`.
pub const HTTP_REQUEST_DURATION: &str = "yuyo_http_request_duration_seconds";
/// `yuyo_handler_duration_seconds`: dispatch to the handler's outcome, by `kind`.
pub const HANDLER_DURATION: &str = "yuyo_handler_duration_seconds";
/// `yuyo_verify_batch_size`: signatures verified together.
pub const VERIFY_BATCH_SIZE: &str = "yuyo_verify_batch_size";
/// `yuyo_verify_failures_total`: signatures that did not verify.
pub const VERIFY_FAILURES: &str = "yuyo_verify_failures_total";
/// `yuyo_verify_failed_batches_total`: batches whose combined equation failed.
pub const VERIFY_FAILED_BATCHES: &str = "yuyo_verify_failed_batches_total";
/// `yuyo_connections_open`: connections holding a slot.
pub const CONNECTIONS_OPEN: &str = "yuyo_connections_open";
/// `yuyo_connection_evictions_total`: connections evicted at the cap.
pub const CONNECTION_EVICTIONS: &str = "yuyo_connection_evictions_total";
/// `yuyo_rest_requests_total`: REST answers by `method`, `route` and `status`.
pub const REST_REQUESTS: &str = "yuyo_rest_requests_total";
/// `yuyo_rest_rate_limited_total`: REST 429s by `scope`.
pub const REST_RATE_LIMITED: &str = "yuyo_rest_rate_limited_total";
/// `yuyo_rest_wait_seconds`: time a call waited before being sent, by `reason`.
pub const REST_WAIT: &str = "yuyo_rest_wait_seconds";

/// Bucket bounds (seconds) for the `_seconds` histograms: 100 µs to 60 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds for [`VERIFY_BATCH_SIZE`] (up to [`MAX_BATCH`](crate::endpoint::MAX_BATCH)).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Registers the description and unit of every metric with the installed recorder.
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by kind and status");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "From a request's head to its response, by kind"
    );
    describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "From dispatch to the handler's outcome, by kind"
    );
    describe_histogram!(
        VERIFY_BATCH_SIZE,
        "Signatures verified together in one batch"
    );
    describe_counter!(VERIFY_FAILURES, "Requests whose signature did not verify");
    describe_counter!(
        VERIFY_FAILED_BATCHES,
        "Batches whose combined equation failed"
    );
    describe_gauge!(CONNECTIONS_OPEN, "Connections open now");
    describe_counter!(CONNECTION_EVICTIONS, "Connections evicted at the cap");
    describe_counter!(
        REST_REQUESTS,
        "REST answers by method, route template and status"
    );
    describe_counter!(REST_RATE_LIMITED, "REST 429 answers by scope");
    describe_histogram!(
        REST_WAIT,
        Unit::Seconds,
        "Time a REST call waited on the rate limiter or a retry, by reason"
    );
}

/// What an HTTP request turned out to be, the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// A PING interaction (type 1).
    Ping,
    /// A command interaction (type 2).
    Command,
    /// A component interaction (type 3).
    Component,
    /// An autocomplete interaction (type 4).
    Autocomplete,
    /// A modal submission (type 5).
    Modal,
    /// A Webhook Event (its PING included).
    Event,
    /// A health check.
    Health,
    /// Refused before dispatch.
    Rejected,
}

const KINDS: usize = 8;

impl RequestKind {
    /// The label value.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Command => "command",
            Self::Component => "component",
            Self::Autocomplete => "autocomplete",
            Self::Modal => "modal",
            Self::Event => "event",
            Self::Health => "health",
            Self::Rejected => "rejected",
        }
    }

    /// What an answer decided without a handler was.
    #[must_use]
    pub const fn of_immediate(immediate: &Immediate) -> Self {
        match immediate {
            Immediate::Pong => Self::Ping,
            Immediate::Acknowledge => Self::Event,
            Immediate::Rejected(_) => Self::Rejected,
            Immediate::Health(_) => Self::Health,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl From<InteractionKind> for RequestKind {
    fn from(kind: InteractionKind) -> Self {
        match kind {
            InteractionKind::Command => Self::Command,
            InteractionKind::Component => Self::Component,
            InteractionKind::Autocomplete => Self::Autocomplete,
            InteractionKind::Modal => Self::Modal,
        }
    }
}

/// The statuses the core answers with; others are counted through a key lookup.
const STATUSES: [(u16, &str); 20] = [
    (200, "200"),
    (202, "202"),
    (204, "204"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (411, "411"),
    (413, "413"),
    (415, "415"),
    (417, "417"),
    (422, "422"),
    (429, "429"),
    (431, "431"),
    (500, "500"),
    (501, "501"),
    (503, "503"),
    (505, "505"),
];

/// The handles of an endpoint's metrics ([`Endpoint::metrics`]), resolved the first time
/// each label set is used. Sessions record through it; a server that runs its own HTTP
/// (yuyo-tower under hyper) calls [`EndpointMetrics::responded`] and
/// [`EndpointMetrics::handled`] itself.
///
/// [`Endpoint::metrics`]: crate::endpoint::Endpoint::metrics
#[derive(Default)]
pub struct EndpointMetrics {
    requests: [[OnceLock<Counter>; STATUSES.len()]; KINDS],
    request_seconds: [OnceLock<Histogram>; KINDS],
    handler_seconds: [OnceLock<Histogram>; KINDS],
    verify_batch: OnceLock<Histogram>,
    verify_failures: OnceLock<Counter>,
    verify_failed_batches: OnceLock<Counter>,
}

impl std::fmt::Debug for EndpointMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMetrics").finish_non_exhaustive()
    }
}

fn seconds(took: Duration) -> f64 {
    took.as_secs_f64()
}

impl EndpointMetrics {
    /// A request of `kind` was answered with `status`, `took` after its head.
    pub fn responded(&self, kind: RequestKind, status: http::StatusCode, took: Duration) {
        let code = status.as_u16();
        let label = kind.label();
        match STATUSES.iter().position(|&(known, _)| known == code) {
            Some(index) => self.requests[kind.index()][index]
                .get_or_init(
                    || counter!(HTTP_REQUESTS, "kind" => label, "status" => STATUSES[index].1),
                )
                .increment(1),
            None => {
                counter!(HTTP_REQUESTS, "kind" => label, "status" => code.to_string()).increment(1);
            }
        }
        self.request_seconds[kind.index()]
            .get_or_init(|| histogram!(HTTP_REQUEST_DURATION, "kind" => label))
            .record(seconds(took));
    }

    /// A handler of `kind` dispatched at `dispatched` gave its outcome at `now`.
    pub fn handled(&self, kind: RequestKind, dispatched: Instant, now: Instant) {
        self.handler_seconds[kind.index()]
            .get_or_init(|| histogram!(HANDLER_DURATION, "kind" => kind.label()))
            .record(seconds(now.saturating_duration_since(dispatched)));
    }

    /// `size` signatures were verified in one run of the queue.
    pub(crate) fn verified_batch(&self, size: usize) {
        self.verify_batch
            .get_or_init(|| histogram!(VERIFY_BATCH_SIZE))
            .record(size as f64);
    }

    /// A signature did not verify.
    pub(crate) fn verify_failed(&self) {
        self.verify_failures
            .get_or_init(|| counter!(VERIFY_FAILURES))
            .increment(1);
    }

    /// A batch's combined equation failed.
    pub(crate) fn batch_failed(&self) {
        self.verify_failed_batches
            .get_or_init(|| counter!(VERIFY_FAILED_BATCHES))
            .increment(1);
    }
}

/// The handles of a connection table's metrics, resolved when it is built.
pub(crate) struct SlotMetrics {
    pub(crate) open: Gauge,
    pub(crate) evictions: Counter,
}

impl Default for SlotMetrics {
    fn default() -> Self {
        Self {
            open: gauge!(CONNECTIONS_OPEN),
            evictions: counter!(CONNECTION_EVICTIONS),
        }
    }
}

/// A REST request on `route` was answered with `status` (`None`: a transport failure).
/// REST calls are few: their labels are looked up each time.
pub(crate) fn rest_answered(route: &RouteKey, status: Option<http::StatusCode>) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.as_u16().to_string());
    counter!(
        REST_REQUESTS,
        "method" => route.method().as_str().to_owned(),
        "route" => route.template().to_owned(),
        "status" => status,
    )
    .increment(1);
}

/// A REST answer was a 429.
pub(crate) fn rest_rate_limited(limited: &RateLimited) {
    let scope = match (limited.global, limited.scope) {
        (true, _) | (false, Some(Scope::Global)) => "global",
        (false, Some(Scope::User)) => "user",
        (false, Some(Scope::Shared)) => "shared",
        (false, None) => "unknown",
    };
    counter!(REST_RATE_LIMITED, "scope" => scope).increment(1);
}

/// A REST call waited `waited` (for `reason` first) before being sent.
pub(crate) fn rest_waited(reason: WaitReason, waited: Duration) {
    let reason = match reason {
        WaitReason::Bucket => "bucket",
        WaitReason::Global => "global",
        WaitReason::Pending => "pending",
        WaitReason::Retry => "retry",
        WaitReason::RetryAfter => "retry_after",
    };
    histogram!(REST_WAIT, "reason" => reason).record(seconds(waited));
}

#[cfg(test)]
mod tests;
