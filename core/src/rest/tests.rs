//! Unit tests of the REST client core, on a fake clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::multipart::FilePart;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use twilight_model::http::interaction::{InteractionResponse, InteractionResponseType};
use twilight_model::id::Id;

use super::*;

mod proptests;
mod upstream;

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The fake clock: `ms` milliseconds after a fixed base.
pub(super) fn at(ms: u64) -> Instant {
    *BASE + Duration::from_millis(ms)
}

const TOKEN: &str = "MTIzNDU2Nzg5.secret-bot-token";
const ITOKEN: &str = "aW50ZXJhY3Rpb246c2VjcmV0LWludGVyYWN0aW9uLXRva2Vu";

fn rest_with(builder: RestConfigBuilder) -> (Rest, RateLimiter) {
    let rest = Rest::new(builder.build().unwrap());
    let limiter = rest.rate_limiter();
    (rest, limiter)
}

fn bot() -> (Rest, RateLimiter) {
    rest_with(RestConfig::builder().token(TOKEN))
}

pub(super) fn reply(status: u16, headers: &[(&str, String)], body: &str) -> http::Response<Bytes> {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Bytes::from(body.to_owned())).unwrap()
}

pub(super) fn limits(
    bucket: &str,
    limit: u32,
    remaining: u32,
    reset_after: f64,
) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-bucket", bucket.to_owned()),
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
    ]
}

fn get(path: &str) -> RestRequest<serde_json::Value> {
    RestRequest::new(
        Route::custom(Method::GET, path).unwrap(),
        RequestBody::Empty,
    )
}

#[track_caller]
fn expect_send<T>(step: Step<T>) -> http::Request<RequestBody> {
    match step {
        Step::Send(request) => request,
        other => panic!("expected Send, got {other:?}"),
    }
}

#[track_caller]
fn expect_wait<T>(step: Step<T>) -> WaitUntil {
    match step {
        Step::Wait(wait) => wait,
        other => panic!("expected Wait, got {other:?}"),
    }
}

#[track_caller]
fn expect_done<T>(step: Step<T>) -> Result<Response<T>, RestError> {
    match step {
        Step::Done(result) => result,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn channel(id: u64) -> RateLimitKey {
    Route::custom(Method::GET, format!("/channels/{id}/messages"))
        .unwrap()
        .rate_limit_key()
}

// ---------------------------------------------------------------- building

#[test]
fn bot_token_request_has_auth_and_user_agent() {
    let (rest, mut limiter) = bot();
    let mut call = rest.call(RestRequest::fetch_application());
    let request = expect_send(call.poll(at(0), &mut limiter));
    assert_eq!(request.method(), Method::GET);
    assert_eq!(
        request.uri().to_string(),
        "https://discord.com/api/v10/applications/@me"
    );
    assert_eq!(
        request.headers()["authorization"],
        format!("Bot {TOKEN}").as_str()
    );
    assert!(request.headers()["authorization"].is_sensitive());
    let agent = request.headers()["user-agent"].to_str().unwrap();
    assert_eq!(agent, USER_AGENT);
    assert!(agent.starts_with("DiscordBot (https://github.com/yuyo-rs/yuyo, "));
    assert!(agent.ends_with(&format!("{})", env!("CARGO_PKG_VERSION"))));
    assert!(request.headers().get("content-type").is_none());
}

#[test]
fn bearer_token_and_rest_url_override() {
    let (rest, mut limiter) = rest_with(
        RestConfig::builder()
            .token("bearer-secret")
            .token_type(TokenType::Bearer)
            .rest_url("http://127.0.0.1:8080/api/"),
    );
    let mut call = rest.call(RestRequest::fetch_authorization());
    let request = expect_send(call.poll(at(0), &mut limiter));
    assert_eq!(request.headers()["authorization"], "Bearer bearer-secret");
    assert_eq!(
        request.uri().to_string(),
        "http://127.0.0.1:8080/api/oauth2/@me"
    );
    assert_eq!(rest.config().token_type(), Some(TokenType::Bearer));
}

#[test]
fn json_body_interaction_callback_is_unauthenticated() {
    let (rest, mut limiter) = bot();
    let response = InteractionResponse {
        kind: InteractionResponseType::DeferredChannelMessageWithSource,
        data: None,
    };
    let request = RestRequest::create_interaction_response(
        Id::new(42),
        ITOKEN,
        Payload::json(&response).unwrap(),
    );
    assert!(!request.route().is_authenticated());
    assert!(!request.route().is_global_limited());
    let mut call = rest.call(request);
    let sent = expect_send(call.poll(at(0), &mut limiter));
    assert_eq!(sent.method(), Method::POST);
    assert_eq!(
        sent.uri().path(),
        format!("/api/v10/interactions/42/{ITOKEN}/callback")
    );
    assert!(sent.headers().get("authorization").is_none());
    assert_eq!(sent.headers()["content-type"], "application/json");
    assert_eq!(sent.headers()["content-length"], "10");
    assert_eq!(
        sent.body().to_bytes().unwrap(),
        Bytes::from_static(br#"{"type":5}"#)
    );
}

#[test]
fn multipart_body_with_files_and_audit_log_reason() {
    let (rest, mut limiter) = bot();
    let payload = Payload::raw_json(r#"{"content":"hi"}"#)
        .with_file(FilePart::memory("a.txt", "hello").with_content_type("text/plain"));
    let request = RestRequest::create_followup(Id::new(7), ITOKEN, payload)
        .with_audit_log_reason("because: reasons ✓");
    let mut call = rest.call(request);
    let sent = expect_send(call.poll(at(0), &mut limiter));
    assert_eq!(sent.uri().query(), Some("wait=true"));
    let content_type = sent.headers()["content-type"].to_str().unwrap().to_owned();
    let RequestBody::Multipart(body) = sent.body() else {
        panic!("expected multipart");
    };
    assert_eq!(
        content_type,
        format!("multipart/form-data; boundary={}", body.boundary())
    );
    let bytes = body.to_bytes().unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("name=\"payload_json\""));
    assert!(text.contains(r#"{"content":"hi"}"#));
    assert!(text.contains("name=\"files[0]\"; filename=\"a.txt\""));
    assert!(text.contains("Content-Type: text/plain\r\n\r\nhello"));
    assert_eq!(
        sent.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(
        sent.headers()["x-audit-log-reason"],
        "because%3A%20reasons%20%E2%9C%93"
    );
}

#[test]
fn payload_from_reply_uses_the_endpoint_payload() {
    let reply = crate::endpoint::Reply::message("pong");
    let payload = Payload::from_reply(reply.payload()).unwrap();
    let json: serde_json::Value = serde_json::from_slice(payload.json_bytes()).unwrap();
    assert_eq!(json["type"], 4);
    assert_eq!(json["data"]["content"], "pong");
}

#[test]
fn custom_routes_know_template_and_major() {
    let route = Route::custom(
        Method::POST,
        "/channels/123/messages/456/reactions/%F0%9F%91%8D/@me",
    )
    .unwrap();
    assert_eq!(
        route.key().template(),
        "/channels/{channel_id}/messages/{id}/reactions/{emoji}/@me"
    );
    assert_eq!(route.major(), Major::Id(123));
    assert!(route.is_authenticated() && route.is_global_limited());

    let route = Route::custom(
        Method::PATCH,
        format!("/webhooks/9/{ITOKEN}/messages/@original"),
    )
    .unwrap();
    assert_eq!(
        route.key().template(),
        "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
    );
    assert!(matches!(route.major(), Major::IdToken(9, _)));
    assert!(!route.is_authenticated() && !route.is_global_limited());

    let plain_webhook = Route::custom(Method::GET, "/webhooks/9").unwrap();
    assert_eq!(plain_webhook.major(), Major::Id(9));
    assert!(plain_webhook.is_authenticated());

    let guild = Route::custom(Method::GET, "/guilds/5/members?limit=10").unwrap();
    assert_eq!(guild.key().to_string(), "GET /guilds/{guild_id}/members");
    assert_eq!(guild.path(), "/guilds/5/members?limit=10");

    assert_eq!(Route::custom(Method::GET, "channels/1"), Err(InvalidPath));
    assert_eq!(Route::custom(Method::GET, "/a b"), Err(InvalidPath));
    let forced = Route::custom(Method::GET, "/x")
        .unwrap()
        .authenticated(false)
        .global_limited(false);
    assert!(!forced.is_authenticated() && !forced.is_global_limited());
}

#[test]
fn tokens_in_paths_are_encoded_and_keep_their_major() {
    let a = Route::original_response(Method::GET, Id::new(1), "a/b");
    assert_eq!(a.path(), "/webhooks/1/a%2Fb/messages/@original");
    let b = Route::original_response(Method::GET, Id::new(1), "other");
    assert_eq!(a.key(), b.key());
    assert_ne!(a.major(), b.major());
}

// ---------------------------------------------------------------- secrets

#[test]
fn tokens_never_show_in_debug() {
    let config = RestConfig::builder().token(TOKEN);
    assert!(!format!("{config:?}").contains("secret"));
    let config = config.build().unwrap();
    assert!(!format!("{config:?}").contains("secret"));
    let rest = Rest::new(config);
    assert!(!format!("{rest:?}").contains("secret"));

    let mut limiter = rest.rate_limiter();
    let request =
        RestRequest::<twilight_model::channel::Message>::get_original_response(Id::new(1), ITOKEN);
    assert!(!format!("{request:?}").contains(ITOKEN));
    let mut call = rest.call(request);
    assert!(!format!("{call:?}").contains(ITOKEN));
    let step = call.poll(at(0), &mut limiter);
    let shown = format!("{step:?}");
    assert!(
        !shown.contains("secret") && !shown.contains(ITOKEN),
        "{shown}"
    );
    assert!(!format!("{limiter:?}").contains(ITOKEN));

    let (rest, mut limiter) = bot();
    let mut call = rest.call(RestRequest::fetch_application());
    let step = call.poll(at(0), &mut limiter);
    assert!(!format!("{step:?}").contains("secret"));
    call.on_response(
        at(1),
        reply(
            404,
            &[],
            r#"{"code":10002,"message":"Unknown Application"}"#,
        ),
        &mut limiter,
    );
    let error = expect_done(call.poll(at(1), &mut limiter)).unwrap_err();
    assert!(!format!("{error:?} {error}").contains("secret"));
    let token = StaticToken::new(TOKEN, TokenType::Bot).unwrap();
    assert!(!format!("{token:?}").contains("secret"));
}

#[derive(Debug)]
struct Refreshing {
    invalidated: Mutex<u32>,
}

impl TokenStrategy for Refreshing {
    fn token_type(&self) -> TokenType {
        TokenType::Bearer
    }

    fn authorization(&self, _now: Instant) -> Result<HeaderValue, TokenError> {
        let generation = *self.invalidated.lock().unwrap();
        Ok(HeaderValue::try_from(format!("Bearer token-{generation}")).unwrap())
    }

    fn invalidate(&self, _rejected: &HeaderValue) {
        *self.invalidated.lock().unwrap() += 1;
    }
}

#[test]
fn token_settings_are_checked() {
    let strategy: Arc<dyn TokenStrategy> = Arc::new(Refreshing {
        invalidated: Mutex::new(0),
    });
    let both = RestConfig::builder()
        .token_strategy(strategy.clone())
        .token_type(TokenType::Bot)
        .build();
    assert_eq!(both.unwrap_err(), ConfigError::TokenTypeWithStrategy);
    let both = RestConfig::builder()
        .token_strategy(strategy)
        .token("x")
        .build();
    assert_eq!(both.unwrap_err(), ConfigError::TokenAndStrategy);
    let type_only = RestConfig::builder().token_type(TokenType::Bearer).build();
    assert_eq!(type_only.unwrap_err(), ConfigError::TokenTypeWithoutToken);
    let bad = RestConfig::builder().token("a\nb").build();
    assert_eq!(
        bad.unwrap_err(),
        ConfigError::Token(TokenError::InvalidCharacters)
    );
    let url = RestConfig::builder().rest_url("discord.com/api").build();
    assert!(matches!(url.unwrap_err(), ConfigError::InvalidRestUrl(_)));
    let none = RestConfig::builder().build().unwrap();
    assert_eq!(none.token_type(), None);
    assert_eq!(none.max_rate_limit(), Some(Duration::from_secs(300)));
    assert_eq!(none.max_retries(), 3);
    assert_eq!(none.rest_url(), DEFAULT_REST_URL);
}

#[test]
fn strategy_supplies_header_and_is_invalidated_on_401() {
    let strategy = Arc::new(Refreshing {
        invalidated: Mutex::new(0),
    });
    let (rest, mut limiter) = rest_with(RestConfig::builder().token_strategy(strategy.clone()));
    let mut call = rest.call(RestRequest::fetch_authorization());
    let sent = expect_send(call.poll(at(0), &mut limiter));
    assert_eq!(sent.headers()["authorization"], "Bearer token-0");
    call.on_response(
        at(1),
        reply(401, &[], r#"{"code":0,"message":"401: Unauthorized"}"#),
        &mut limiter,
    );
    let error = expect_done(call.poll(at(1), &mut limiter)).unwrap_err();
    assert_eq!(error.http().unwrap().status, StatusCode::UNAUTHORIZED);
    assert_eq!(*strategy.invalidated.lock().unwrap(), 1);
    let mut call = rest.call(RestRequest::fetch_authorization());
    let sent = expect_send(call.poll(at(2), &mut limiter));
    assert_eq!(sent.headers()["authorization"], "Bearer token-1");
}

// ---------------------------------------------------------------- buckets

#[test]
fn bucket_is_learned_from_headers() {
    let (rest, mut limiter) = bot();
    let mut first = rest.call(get("/channels/1/messages"));
    let mut second = rest.call(get("/channels/1/messages"));
    expect_send(first.poll(at(0), &mut limiter));
    // The route's bucket is unknown: the second waits for the first's answer.
    let wait = expect_wait(second.poll(at(0), &mut limiter));
    assert_eq!(wait.reason, WaitReason::Pending);
    assert!(wait.wakes_on_update());
    let version = limiter.version();
    first.on_response(
        at(10),
        reply(200, &limits("abcd", 3, 2, 1.0), "[]"),
        &mut limiter,
    );
    assert_ne!(limiter.version(), version);
    assert!(expect_done(first.poll(at(10), &mut limiter)).is_ok());
    assert_eq!(limiter.learned_bucket(&channel(1).route), Some("abcd"));
    // The first answer opened the window: one of two permits left.
    assert_eq!(limiter.remaining(&channel(1)), Some(2));
    expect_send(second.poll(at(10), &mut limiter));
    assert_eq!(limiter.remaining(&channel(1)), Some(1));
    second.on_response(
        at(20),
        reply(200, &limits("abcd", 3, 1, 0.99), "[]"),
        &mut limiter,
    );
    assert_eq!(limiter.remaining(&channel(1)), Some(1));
    // Another channel on the known route: its window is probed by one request.
    let mut probe = rest.call(get("/channels/2/messages"));
    let mut held = rest.call(get("/channels/2/messages"));
    expect_send(probe.poll(at(30), &mut limiter));
    assert_eq!(
        expect_wait(held.poll(at(30), &mut limiter)).reason,
        WaitReason::Pending
    );
    probe.on_response(
        at(40),
        reply(200, &limits("abcd", 3, 2, 1.0), "[]"),
        &mut limiter,
    );
    expect_send(held.poll(at(40), &mut limiter));
}

/// Probe `channel(id)`'s window at `now` with an answer of `remaining`.
#[allow(clippy::too_many_arguments)]
fn establish(
    rest: &Rest,
    limiter: &mut RateLimiter,
    path: &str,
    bucket: &str,
    limit: u32,
    remaining: u32,
    reset_after: f64,
    now: Instant,
) {
    let mut call = rest.call(get(path));
    expect_send(call.poll(now, limiter));
    call.on_response(
        now,
        reply(200, &limits(bucket, limit, remaining, reset_after), "{}"),
        limiter,
    );
    assert!(expect_done(call.poll(now, limiter)).is_ok());
}

#[test]
fn sliding_bucket_frees_each_slot_a_window_after_its_answer() {
    let (rest, mut limiter) = bot();
    // Alone in its window: 2 per second, window 1 s; its slot frees at
    // 1005 ms (answer + window + margin).
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "b",
        2,
        1,
        1.0,
        at(0),
    );
    assert_eq!(limiter.remaining(&channel(1)), Some(1));
    let mut a = rest.call(get("/channels/1/messages"));
    let mut b = rest.call(get("/channels/1/messages"));
    let mut c = rest.call(get("/channels/1/messages"));
    expect_send(a.poll(at(0), &mut limiter));
    a.on_response(
        at(10),
        reply(200, &limits("b", 2, 0, 0.99), "{}"),
        &mut limiter,
    );
    // `Remaining: 0` holds the bucket until the oldest leaves (1000 ms) ...
    let wait = expect_wait(b.poll(at(10), &mut limiter));
    assert_eq!(
        wait,
        WaitUntil {
            until: at(1000),
            reason: WaitReason::Bucket
        }
    );
    assert!(!wait.wakes_on_update());
    // ... and the first slot is ours until 1005 ms, the second until 1015.
    assert_eq!(expect_wait(b.poll(at(1000), &mut limiter)).until, at(1005));
    expect_send(b.poll(at(1005), &mut limiter));
    assert_eq!(expect_wait(c.poll(at(1005), &mut limiter)).until, at(1015));
    expect_send(c.poll(at(1015), &mut limiter));
}

#[test]
fn fixed_window_is_never_overrun() {
    let (rest, mut limiter) = bot();
    // Window [0, 1000) of 2: one used by this request.
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "f",
        2,
        1,
        1.0,
        at(0),
    );
    let mut a = rest.call(get("/channels/1/messages"));
    expect_send(a.poll(at(500), &mut limiter));
    a.on_response(
        at(500),
        reply(200, &limits("f", 2, 0, 0.5), "{}"),
        &mut limiter,
    );
    // Exhausted until the window ends; then only the slot of the first frees
    // (the second may have started a sliding window at 500 ms).
    let mut b = rest.call(get("/channels/1/messages"));
    let mut c = rest.call(get("/channels/1/messages"));
    assert_eq!(expect_wait(b.poll(at(501), &mut limiter)).until, at(1000));
    assert_eq!(expect_wait(b.poll(at(1000), &mut limiter)).until, at(1005));
    expect_send(b.poll(at(1005), &mut limiter));
    assert_eq!(expect_wait(c.poll(at(1005), &mut limiter)).until, at(1505));
}

#[test]
fn routes_with_the_same_hash_share_a_bucket() {
    let (rest, mut limiter) = bot();
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "shared",
        5,
        4,
        5.0,
        at(0),
    );
    assert_eq!(limiter.remaining(&channel(1)), Some(4));
    // An unknown route of the same channel goes at once, held by no bucket.
    let mut pins = rest.call(get("/channels/1/pins"));
    expect_send(pins.poll(at(1), &mut limiter));
    assert_eq!(limiter.remaining(&channel(1)), Some(4));
    // It answers with the same hash: its slot is counted there.
    pins.on_response(
        at(2),
        reply(200, &limits("shared", 5, 3, 5.0), "{}"),
        &mut limiter,
    );
    let pins_key = Route::custom(Method::GET, "/channels/1/pins")
        .unwrap()
        .rate_limit_key();
    assert_eq!(limiter.learned_bucket(&pins_key.route), Some("shared"));
    assert_eq!(limiter.remaining(&pins_key), Some(3));
    // Both routes now draw on one count.
    let mut calls: Vec<_> = ["pins", "messages", "pins", "messages"]
        .iter()
        .map(|route| rest.call(get(&format!("/channels/1/{route}"))))
        .collect();
    for call in &mut calls[..3] {
        expect_send(call.poll(at(3), &mut limiter));
    }
    assert_eq!(
        expect_wait(calls[3].poll(at(3), &mut limiter)).reason,
        WaitReason::Bucket
    );
}

#[test]
fn unseen_routes_never_wait_for_other_buckets() {
    let (rest, mut limiter) = bot();
    // The webhook's follow-up bucket is exhausted for 5 s.
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "m",
        1,
        0,
        5.0,
        at(0),
    );
    let mut known = rest.call(get("/channels/1/messages"));
    assert_eq!(
        expect_wait(known.poll(at(1), &mut limiter)).reason,
        WaitReason::Bucket
    );
    // Another route of the same channel goes at once, one at a time until
    // its bucket is known.
    let mut first = rest.call(get("/channels/1/typing"));
    let mut second = rest.call(get("/channels/1/typing"));
    expect_send(first.poll(at(1), &mut limiter));
    assert_eq!(
        expect_wait(second.poll(at(1), &mut limiter)).reason,
        WaitReason::Pending
    );
    first.on_response(
        at(2),
        reply(200, &limits("t", 5, 4, 5.0), "{}"),
        &mut limiter,
    );
    expect_send(second.poll(at(2), &mut limiter));
    // The exhausted bucket is untouched.
    assert_eq!(limiter.remaining(&channel(1)), Some(0));
}

#[test]
fn major_parameters_are_limited_separately() {
    let (rest, mut limiter) = bot();
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "b",
        1,
        0,
        10.0,
        at(0),
    );
    let mut same = rest.call(get("/channels/1/messages"));
    assert_eq!(
        expect_wait(same.poll(at(1), &mut limiter)).reason,
        WaitReason::Bucket
    );
    // Another channel, same route: its own window.
    let mut other = rest.call(get("/channels/2/messages"));
    expect_send(other.poll(at(1), &mut limiter));
    // And interaction tokens are majors too.
    let mut token_a = rest.call(
        RestRequest::<twilight_model::channel::Message>::get_original_response(Id::new(1), "a"),
    );
    let mut token_b = rest.call(
        RestRequest::<twilight_model::channel::Message>::get_original_response(Id::new(1), "b"),
    );
    expect_send(token_a.poll(at(1), &mut limiter));
    expect_send(token_b.poll(at(1), &mut limiter));
}

#[test]
fn routes_without_headers_are_unlimited() {
    let (rest, mut limiter) = bot();
    let mut first = rest.call(get("/gateway"));
    expect_send(first.poll(at(0), &mut limiter));
    first.on_response(at(1), reply(200, &[], "{}"), &mut limiter);
    let mut calls: Vec<_> = (0..5).map(|_| rest.call(get("/gateway"))).collect();
    for call in &mut calls {
        expect_send(call.poll(at(2), &mut limiter));
    }
    assert_eq!(limiter.in_flight(), 5);
}

// ---------------------------------------------------------------- global

#[test]
fn global_limit_and_interaction_exemption() {
    let (rest, mut limiter) = bot();
    for index in 0..50_u32 {
        establish_unlimited(
            &rest,
            &mut limiter,
            &format!("/guilds/{index}/x"),
            at(u64::from(index) * 10),
        );
    }
    let mut late = rest.call(get("/guilds/99/x"));
    // Each holds its slot until a second (and 20 ms) after its answer.
    let wait = expect_wait(late.poll(at(500), &mut limiter));
    assert_eq!(
        wait,
        WaitUntil {
            until: at(1020),
            reason: WaitReason::Global
        }
    );
    // Interaction routes do not count and are not held.
    let mut followup = rest.call(
        RestRequest::<twilight_model::channel::Message>::get_original_response(Id::new(1), ITOKEN),
    );
    expect_send(followup.poll(at(500), &mut limiter));
    // The window slides: one slot frees at 1020 ms.
    expect_wait(late.poll(at(1019), &mut limiter));
    expect_send(late.poll(at(1020), &mut limiter));
}

fn establish_unlimited(rest: &Rest, limiter: &mut RateLimiter, path: &str, now: Instant) {
    let mut call = rest.call(get(path));
    expect_send(call.poll(now, limiter));
    call.on_response(now, reply(200, &[], "{}"), limiter);
    assert!(expect_done(call.poll(now, limiter)).is_ok());
}

#[test]
fn global_limit_is_configurable() {
    let (rest, mut limiter) = rest_with(
        RestConfig::builder()
            .token(TOKEN)
            .global_limit(NonZeroU32::new(2)),
    );
    establish_unlimited(&rest, &mut limiter, "/a", at(0));
    establish_unlimited(&rest, &mut limiter, "/b", at(0));
    let mut third = rest.call(get("/c"));
    assert_eq!(
        expect_wait(third.poll(at(0), &mut limiter)).reason,
        WaitReason::Global
    );
    let (rest, mut limiter) = rest_with(RestConfig::builder().token(TOKEN).global_limit(None));
    for _ in 0..200 {
        establish_unlimited(&rest, &mut limiter, "/a", at(0));
    }
}

// ---------------------------------------------------------------- 429

#[test]
fn route_429_waits_retry_after_from_body() {
    let (rest, mut limiter) = bot();
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    let mut headers = limits("b", 5, 0, 64.57);
    headers.push(("retry-after", "65".to_owned()));
    headers.push(("x-ratelimit-scope", "user".to_owned()));
    call.on_response(
        at(0),
        reply(
            429,
            &headers,
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        ),
        &mut limiter,
    );
    assert_eq!(
        expect_wait(call.poll(at(0), &mut limiter)),
        WaitUntil {
            until: at(1500),
            reason: WaitReason::RetryAfter
        }
    );
    // Others on the bucket are held too (until the window Discord reported).
    let mut other = rest.call(get("/channels/1/messages"));
    assert_eq!(
        expect_wait(other.poll(at(100), &mut limiter)).reason,
        WaitReason::Bucket
    );
}

#[test]
fn shared_429_holds_the_bucket_for_retry_after_header() {
    let (rest, mut limiter) = bot();
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "b",
        10,
        9,
        1.0,
        at(0),
    );
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    let mut headers = limits("b", 10, 8, 1.0);
    headers.push(("retry-after", "3".to_owned()));
    headers.push(("x-ratelimit-scope", "shared".to_owned()));
    call.on_response(at(0), reply(429, &headers, "not json"), &mut limiter);
    assert_eq!(
        expect_wait(call.poll(at(0), &mut limiter)),
        WaitUntil {
            until: at(3000),
            reason: WaitReason::RetryAfter
        }
    );
    let mut other = rest.call(get("/channels/1/messages"));
    assert_eq!(
        expect_wait(other.poll(at(1), &mut limiter)),
        WaitUntil {
            until: at(3000),
            reason: WaitReason::Bucket
        }
    );
    // After the hold: a fresh window is probed, then the call succeeds.
    expect_send(call.poll(at(3000), &mut limiter));
    call.on_response(
        at(3001),
        reply(200, &limits("b", 10, 9, 1.0), "{}"),
        &mut limiter,
    );
    assert!(expect_done(call.poll(at(3001), &mut limiter)).is_ok());
    assert_eq!(call.sends(), 2);
}

#[test]
fn global_429_holds_every_limited_route() {
    let (rest, mut limiter) = bot();
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    let headers = vec![
        ("retry-after", "2".to_owned()),
        ("x-ratelimit-global", "true".to_owned()),
        ("x-ratelimit-scope", "global".to_owned()),
    ];
    call.on_response(at(0), reply(429, &headers, ""), &mut limiter);
    assert_eq!(
        expect_wait(call.poll(at(0), &mut limiter)),
        WaitUntil {
            until: at(2000),
            reason: WaitReason::RetryAfter
        }
    );
    let mut other = rest.call(get("/guilds/3/roles"));
    assert_eq!(
        expect_wait(other.poll(at(10), &mut limiter)),
        WaitUntil {
            until: at(2000),
            reason: WaitReason::Global
        }
    );
    let mut exempt = rest.call(
        RestRequest::<twilight_model::channel::Message>::get_original_response(Id::new(1), ITOKEN),
    );
    expect_send(exempt.poll(at(10), &mut limiter));
    // Body `"global": true` alone is enough too.
    let mut call = rest.call(get("/guilds/4/roles"));
    expect_send(call.poll(at(2000), &mut limiter));
    call.on_response(
        at(2000),
        reply(429, &[], r#"{"retry_after":0.25,"global":true}"#),
        &mut limiter,
    );
    let mut other = rest.call(get("/guilds/5/roles"));
    assert_eq!(
        expect_wait(other.poll(at(2001), &mut limiter)),
        WaitUntil {
            until: at(2250),
            reason: WaitReason::Global
        }
    );
}

#[test]
fn waits_longer_than_max_rate_limit_fail() {
    let (rest, mut limiter) = rest_with(
        RestConfig::builder()
            .token(TOKEN)
            .max_rate_limit(Some(Duration::from_secs(10))),
    );
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(
        at(0),
        reply(
            429,
            &limits("b", 1, 0, 60.0),
            r#"{"retry_after":60.0,"global":false}"#,
        ),
        &mut limiter,
    );
    match expect_done(call.poll(at(0), &mut limiter)) {
        Err(RestError::RateLimitTooLong {
            wait,
            route,
            global,
        }) => {
            assert_eq!(wait, Duration::from_secs(60));
            assert_eq!(route.to_string(), "GET /channels/{channel_id}/messages");
            assert!(!global);
        }
        other => panic!("{other:?}"),
    }
    // An exhausted bucket whose reset is too far fails the same way.
    let mut next = rest.call(get("/channels/1/messages"));
    match expect_done(next.poll(at(1), &mut limiter)) {
        Err(RestError::RateLimitTooLong { wait, .. }) => {
            assert_eq!(wait, Duration::from_millis(59_999))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        expect_done(next.poll(at(1), &mut limiter)),
        Err(RestError::CallFinished)
    ));
    // Infinite: waits however long.
    let (rest, mut limiter) = rest_with(RestConfig::builder().token(TOKEN).max_rate_limit(None));
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(
        at(0),
        reply(429, &[("retry-after", "3600".to_owned())], ""),
        &mut limiter,
    );
    assert_eq!(
        expect_wait(call.poll(at(0), &mut limiter)).until,
        at(3_600_000)
    );
}

// ---------------------------------------------------------------- retries

#[test]
fn server_errors_are_retried_then_exhausted() {
    let (rest, mut limiter) = rest_with(RestConfig::builder().token(TOKEN).max_retries(2));
    let mut call = rest.call(get("/channels/1/messages"));
    let mut now = at(0);
    let mut delays = Vec::new();
    for _ in 0..3 {
        expect_send(call.poll(now, &mut limiter));
        call.on_response(
            now,
            reply(502, &[], "<html>bad gateway</html>"),
            &mut limiter,
        );
        match call.poll(now, &mut limiter) {
            Step::Wait(wait) => {
                assert_eq!(wait.reason, WaitReason::Retry);
                delays.push(wait.until - now);
                now = wait.until;
            }
            Step::Done(Err(RestError::RetriesExhausted { attempts, last })) => {
                assert_eq!(attempts, 3);
                let http = last.http().unwrap();
                assert_eq!(http.status, StatusCode::BAD_GATEWAY);
                assert!(http.discord.is_none());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2)]);
}

#[test]
fn server_error_then_success() {
    let (rest, mut limiter) = bot();
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(at(0), reply(503, &[], ""), &mut limiter);
    let wait = expect_wait(call.poll(at(0), &mut limiter));
    expect_send(call.poll(wait.until, &mut limiter));
    call.on_response(wait.until, reply(200, &[], r#"{"ok":true}"#), &mut limiter);
    let response = expect_done(call.poll(wait.until, &mut limiter)).unwrap();
    assert_eq!(response.model().unwrap()["ok"], true);
}

#[test]
fn transport_errors_are_retried_when_safe() {
    let (rest, mut limiter) = rest_with(RestConfig::builder().token(TOKEN).max_retries(1));
    // Connect failures: never sent, always retried.
    let mut call = rest.call(RestRequest::create_followup(
        Id::new(1),
        ITOKEN,
        Payload::raw_json("{}"),
    ));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_transport_error(
        at(0),
        TransportError::new(TransportErrorKind::Connect, "refused"),
        &mut limiter,
    );
    let wait = expect_wait(call.poll(at(0), &mut limiter));
    assert_eq!(wait.reason, WaitReason::Retry);
    expect_send(call.poll(wait.until, &mut limiter));
    call.on_transport_error(
        wait.until,
        TransportError::new(TransportErrorKind::Connect, "refused"),
        &mut limiter,
    );
    match expect_done(call.poll(wait.until, &mut limiter)) {
        Err(RestError::RetriesExhausted { attempts: 2, last }) => {
            assert!(matches!(*last, RestError::Transport { .. }));
        }
        other => panic!("{other:?}"),
    }
    // A POST that may have been sent is not repeated.
    let mut call = rest.call(RestRequest::create_followup(
        Id::new(1),
        ITOKEN,
        Payload::raw_json("{}"),
    ));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_transport_error(
        at(0),
        TransportError::new(TransportErrorKind::Timeout, "read"),
        &mut limiter,
    );
    assert!(matches!(
        expect_done(call.poll(at(0), &mut limiter)),
        Err(RestError::Timeout { .. })
    ));
    // A GET is.
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_transport_error(
        at(0),
        TransportError::new(TransportErrorKind::Io, "reset"),
        &mut limiter,
    );
    assert_eq!(
        expect_wait(call.poll(at(0), &mut limiter)).reason,
        WaitReason::Retry
    );
    // The failed probe no longer holds the route back.
    let mut other = rest.call(get("/channels/1/messages"));
    expect_send(other.poll(at(0), &mut limiter));
}

#[test]
fn backoff_jitter_is_deterministic_and_capped() {
    let backoff = Backoff {
        base: Duration::from_millis(500),
        max: Duration::from_secs(4),
        jitter_seed: Some(7),
    };
    let first: Vec<_> = (1..=6).map(|retry| backoff.delay(retry, 3)).collect();
    let again: Vec<_> = (1..=6).map(|retry| backoff.delay(retry, 3)).collect();
    assert_eq!(first, again);
    for (index, delay) in first.iter().enumerate() {
        let floor = Duration::from_millis(500 << index).min(Duration::from_secs(4));
        assert!(
            *delay >= floor
                && *delay <= (floor + Duration::from_millis(500)).min(Duration::from_secs(4))
        );
    }
    assert_ne!(backoff.delay(1, 3), backoff.delay(1, 4));
}

// ---------------------------------------------------------------- errors

#[test]
fn discord_error_json_is_decoded() {
    let (rest, mut limiter) = bot();
    let mut call = rest.call(RestRequest::create_followup(
        Id::new(1),
        ITOKEN,
        Payload::raw_json("{}"),
    ));
    expect_send(call.poll(at(0), &mut limiter));
    let body = r#"{"code":50035,"message":"Invalid Form Body","errors":{"content":{"_errors":[{"code":"BASE_TYPE_MAX_LENGTH","message":"Must be 2000 or fewer in length."}]}}}"#;
    call.on_response(at(0), reply(400, &[], body), &mut limiter);
    let error = expect_done(call.poll(at(0), &mut limiter)).unwrap_err();
    let http = error.http().unwrap();
    assert_eq!(http.status, StatusCode::BAD_REQUEST);
    let discord = http.discord.as_ref().unwrap();
    assert_eq!(discord.code, 50035);
    assert_eq!(discord.message, "Invalid Form Body");
    assert_eq!(
        discord.errors.as_ref().unwrap()["content"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );
    assert!(error.to_string().contains("Invalid Form Body (code 50035)"));
    assert!(!error.to_string().contains(ITOKEN));
}

#[test]
fn typed_models_decode() {
    let (rest, mut limiter) = bot();
    let mut call = rest.call(RestRequest::delete_original_response(Id::new(1), ITOKEN));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(at(0), reply(204, &[], ""), &mut limiter);
    let response = expect_done(call.poll(at(0), &mut limiter)).unwrap();
    assert_eq!(response.model().unwrap(), NoContent);

    let mut call = rest.call(RestRequest::fetch_application());
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(at(0), reply(200, &[], r#"{"id":"1"}"#), &mut limiter);
    let response = expect_done(call.poll(at(0), &mut limiter)).unwrap();
    assert!(matches!(response.model(), Err(RestError::Decode { .. })));
}

// ---------------------------------------------------------------- public key

const KEY_HEX: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

#[test]
fn verify_key_is_read_from_both_endpoints() {
    let application = format!(r#"{{"id":"1","name":"bot","verify_key":"{KEY_HEX}"}}"#);
    let key = verify_key_from(application.as_bytes()).unwrap();
    assert_eq!(key[0], 0xea);
    assert_eq!(key[31], 0x2c);
    let authorization = format!(
        r#"{{"application":{{"id":"1","verify_key":"{}"}},"scopes":[]}}"#,
        KEY_HEX.to_uppercase()
    );
    assert_eq!(verify_key_from(authorization.as_bytes()).unwrap(), key);
    for bad in [
        r#"{"verify_key":"abc"}"#,
        r#"{"id":"1"}"#,
        "nope",
        &format!(r#"{{"verify_key":"{}zz"}}"#, &KEY_HEX[..62]),
    ] {
        assert!(matches!(
            verify_key_from(bad.as_bytes()),
            Err(KeyDiscoveryError::InvalidVerifyKey)
        ));
    }
}

#[test]
fn key_discovery_is_single_flight() {
    let (rest, mut limiter) = bot();
    let mut discovery = KeyDiscovery::new(rest.config().token_type());
    let Ok(Begin::Fetch(request)) = discovery.begin() else {
        panic!("the first caller fetches");
    };
    assert_eq!(request.route().key().to_string(), "GET /applications/@me");
    assert!(matches!(discovery.begin(), Ok(Begin::Wait)));
    let mut call = rest.call(request);
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(
        at(0),
        reply(200, &[], &format!(r#"{{"verify_key":"{KEY_HEX}"}}"#)),
        &mut limiter,
    );
    let key = discovery
        .finish(expect_done(call.poll(at(0), &mut limiter)))
        .unwrap();
    assert!(matches!(discovery.begin(), Ok(Begin::Ready(found)) if found == key));
    assert_eq!(discovery.key(), Some(key));

    let bearer = verify_key_request(TokenType::Bearer);
    assert_eq!(bearer.route().key().to_string(), "GET /oauth2/@me");
    assert!(matches!(
        KeyDiscovery::new(None).begin(),
        Err(KeyDiscoveryError::NoToken)
    ));
    // A failure lets the next caller try again.
    let mut discovery = KeyDiscovery::new(Some(TokenType::Bot));
    assert!(matches!(discovery.begin(), Ok(Begin::Fetch(_))));
    assert!(discovery.finish(Err(RestError::CallFinished)).is_err());
    assert!(matches!(discovery.begin(), Ok(Begin::Fetch(_))));
}

#[test]
fn dropped_calls_stop_holding_the_bucket_after_the_timeout() {
    let (rest, mut limiter) = rest_with(
        RestConfig::builder()
            .token(TOKEN)
            .in_flight_timeout(Duration::from_secs(5)),
    );
    let mut dropped = rest.call(get("/channels/1/messages"));
    expect_send(dropped.poll(at(0), &mut limiter));
    drop(dropped);
    let mut next = rest.call(get("/channels/1/messages"));
    let wait = expect_wait(next.poll(at(1), &mut limiter));
    assert_eq!(
        wait,
        WaitUntil {
            until: at(5000),
            reason: WaitReason::Pending
        }
    );
    expect_send(next.poll(at(5000), &mut limiter));
}

#[test]
fn connect_failures_hand_permits_back() {
    let (rest, mut limiter) = bot();
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "b",
        2,
        1,
        5.0,
        at(0),
    );
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(1), &mut limiter));
    assert_eq!(limiter.remaining(&channel(1)), Some(0));
    call.on_transport_error(
        at(1),
        TransportError::new(TransportErrorKind::Connect, "refused"),
        &mut limiter,
    );
    assert_eq!(limiter.remaining(&channel(1)), Some(1));
    // A failure after sending keeps the permit used.
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(2), &mut limiter));
    call.on_transport_error(
        at(2),
        TransportError::new(TransportErrorKind::Io, "reset"),
        &mut limiter,
    );
    assert_eq!(limiter.remaining(&channel(1)), Some(0));
}

#[test]
fn an_unseen_route_sharing_a_bucket_is_counted_there() {
    let (rest, mut limiter) = bot();
    establish(
        &rest,
        &mut limiter,
        "/channels/1/messages",
        "b",
        2,
        1,
        5.0,
        at(0),
    );
    let mut unknown = rest.call(get("/channels/1/pins"));
    expect_send(unknown.poll(at(1), &mut limiter));
    // It was the same bucket and used its last request: the known route
    // waits for the first slot to free.
    unknown.on_response(
        at(2),
        reply(200, &limits("b", 2, 0, 4.999), "{}"),
        &mut limiter,
    );
    let mut known = rest.call(get("/channels/1/messages"));
    assert_eq!(
        expect_wait(known.poll(at(2), &mut limiter)),
        WaitUntil {
            until: at(5001),
            reason: WaitReason::Bucket
        }
    );
    assert_eq!(
        expect_wait(known.poll(at(5001), &mut limiter)).until,
        at(5005)
    );
}

#[test]
fn global_slots_are_held_until_a_second_after_the_answer() {
    let (rest, mut limiter) = rest_with(
        RestConfig::builder()
            .token(TOKEN)
            .global_limit(NonZeroU32::new(2)),
    );
    let mut a = rest.call(get("/a"));
    let mut b = rest.call(get("/b"));
    let mut c = rest.call(get("/c"));
    expect_send(a.poll(at(0), &mut limiter));
    expect_send(b.poll(at(0), &mut limiter));
    // Both slots in flight: only an answer can start a release.
    let wait = expect_wait(c.poll(at(0), &mut limiter));
    assert_eq!(wait.reason, WaitReason::Pending);
    // Answered at 300 ms: it may have arrived then, so Discord counts it
    // until 1300 ms.
    a.on_response(at(300), reply(200, &[], "{}"), &mut limiter);
    assert_eq!(
        expect_wait(c.poll(at(300), &mut limiter)),
        WaitUntil {
            until: at(1320),
            reason: WaitReason::Global
        }
    );
    expect_send(c.poll(at(1320), &mut limiter));
    // A request refused before leaving frees its slot at once.
    b.on_transport_error(
        at(1320),
        TransportError::new(TransportErrorKind::Connect, "refused"),
        &mut limiter,
    );
    let mut d = rest.call(get("/d"));
    expect_send(d.poll(at(1320), &mut limiter));
}

/// The answer of a first `GET /channels/1/messages` is `headers` and `body`
/// with `status`; returns the call's result and the limiter.
fn answered(
    max: Option<Duration>,
    status: u16,
    headers: &[(&str, String)],
    body: &str,
) -> (Result<(), RestError>, Rest, RateLimiter) {
    let (rest, mut limiter) = rest_with(RestConfig::builder().token(TOKEN).max_rate_limit(max));
    let mut call = rest.call(get("/channels/1/messages"));
    expect_send(call.poll(at(0), &mut limiter));
    call.on_response(at(0), reply(status, headers, body), &mut limiter);
    let result = match call.poll(at(0), &mut limiter) {
        Step::Done(result) => result.map(drop),
        Step::Wait(wait) => {
            assert!(
                wait.until <= at(0) + ratelimit::MAX_UPSTREAM_WAIT,
                "{wait:?}"
            );
            Ok(())
        }
        // Retried at once (a wait of zero).
        Step::Send(_) => Ok(()),
        Step::InFlight => panic!("in flight after an answer"),
    };
    (result, rest, limiter)
}

#[test]
fn absurd_upstream_durations_are_clamped_and_never_panic() {
    let max = Some(Duration::from_secs(300));
    for value in ["1e19", "1e308", "inf", "18446744073709551616"] {
        // In a 429's body, its `Retry-After` or its `Reset-After`.
        // (`inf` is no JSON number: only the headers can carry it.)
        if value != "inf" {
            let body = format!(r#"{{"retry_after":{value},"global":false}}"#);
            let (result, ..) = answered(max, 429, &[], &body);
            assert!(
                matches!(result, Err(RestError::RateLimitTooLong { wait, .. }) if wait == ratelimit::MAX_UPSTREAM_WAIT),
                "{value}: {result:?}"
            );
        }
        for name in ["retry-after", "x-ratelimit-reset-after"] {
            let (result, ..) = answered(max, 429, &[(name, value.to_owned())], "{}");
            assert!(
                matches!(result, Err(RestError::RateLimitTooLong { .. })),
                "{name} {value}: {result:?}"
            );
        }
        // An exhausted bucket that resets "never": the next call on it fails
        // at once, a call on another route goes.
        let (result, rest, mut limiter) = answered(max, 200, &limits("b", 1, 0, 1e19), "{}");
        assert!(result.is_ok());
        let mut same = rest.call(get("/channels/1/messages"));
        assert!(matches!(
            expect_done(same.poll(at(1), &mut limiter)),
            Err(RestError::RateLimitTooLong { .. })
        ));
        let mut other = rest.call(get("/channels/2/messages"));
        expect_send(other.poll(at(1), &mut limiter));
    }
    // Without a maximum: waits the clamped maximum, no more.
    let (_, rest, mut limiter) = answered(None, 200, &limits("b", 1, 0, 1e19), "{}");
    let mut same = rest.call(get("/channels/1/messages"));
    assert_eq!(
        expect_wait(same.poll(at(1), &mut limiter)).until,
        at(0) + ratelimit::MAX_UPSTREAM_WAIT
    );
    // Negative, NaN and garbage: no wait from them, and no panic.
    for value in ["-1", "NaN", "-inf", "soon", ""] {
        let body = format!(r#"{{"retry_after":"{value}","global":false}}"#);
        let headers = [
            ("retry-after", value.to_owned()),
            ("x-ratelimit-reset-after", value.to_owned()),
        ];
        let (result, ..) = answered(max, 429, &headers, &body);
        assert!(result.is_ok(), "{value}: {result:?}");
    }
}
