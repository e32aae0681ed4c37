//! The REST client and bot cases, each generic over the adapter's [`BotHarness`];
//! [`bot_suite!`](crate::bot_suite) makes a `#[test]` of each.
//!
//! The client talks to the [`MockDiscord`] (and the [`ConnectProxy`]) on 127.0.0.1:
//! authentication and keep-alive, rate limits (bucket, route and global 429, the
//! maximum wait), retries, timeouts, multipart uploads, TLS with a custom CA and a
//! proxy. The bot cases cover public-key discovery, construction errors and the
//! managed and unmanaged lifecycles. Every step that may hang is [`bounded`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use http::Method;
use yuyo_core::multipart::FilePart;
use yuyo_core::rest::bot::{BotBuilder, BotError, LifecycleError};
use yuyo_core::rest::transport::{HttpSettings, ProxySettings, TlsVerification, rustls};
use yuyo_core::rest::{
    Backoff, NoContent, Payload, RequestBody, RequestError, RestConfig, RestConfigBuilder,
    RestError, RestRequest, Route, SyncOutcome, TokenType, parse_commands,
};

use crate::bot_harness::{BotHarness, LIMIT, bounded};
use crate::mock_discord::{ConnectProxy, MockDiscord, Reply};

/// A public key (hex) for bots that need not discover theirs.
const KEY_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

// ---------------------------------------------------------------------------------------
// Helpers

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        jitter_seed: None,
    }
}

/// A client for `url` with token `tok`, the fast backoff and `f`'s changes.
fn client<H: BotHarness>(
    url: &str,
    f: impl FnOnce(RestConfigBuilder) -> RestConfigBuilder,
) -> H::Client {
    let config = f(RestConfig::builder()
        .token("tok")
        .rest_url(url)
        .backoff(fast_backoff()))
    .build()
    .unwrap();
    H::client(config, HttpSettings::default(), None)
}

/// `GET path`, bounded.
fn get<H: BotHarness>(client: &H::Client, path: &'static str) -> Result<(), RequestError> {
    let client = client.clone();
    bounded(move || H::request(&client, Method::GET, path, RequestBody::Empty))
}

fn bot<H: BotHarness>() -> BotBuilder<H::Bot> {
    BotBuilder::new("tok")
}

/// An unmanaged bot with a known key.
fn unmanaged_bot<H: BotHarness>() -> H::Bot {
    bot::<H>()
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap()
}

/// Runs `f` on the bot, bounded.
fn on_bot<H: BotHarness, T: Send + 'static>(
    bot: &H::Bot,
    f: impl FnOnce(&H::Bot) -> T + Send + 'static,
) -> T {
    let bot = bot.clone();
    bounded(move || f(&bot))
}

// ---------------------------------------------------------------------------------------
// REST client

/// Requests carry `Authorization: Bot <token>` and a `DiscordBot` user agent, reuse one
/// keep-alive connection, and the client's `Debug` does not show the token.
pub fn token_header_user_agent_and_keep_alive<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let client = client::<H>(&url, |b| b);
    get::<H>(&client, "/users/@me").unwrap();
    get::<H>(&client, "/users/@me").unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/api/v10/users/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bot tok"));
    assert!(
        requests[0]
            .header("user-agent")
            .unwrap()
            .starts_with("DiscordBot (")
    );
    assert_eq!(H::idle_connections(&client), 1);
    assert!(!format!("{client:?}").contains("tok\""), "{client:?}");
}

/// A bucket learned from the headers (none remaining) delays the next request on it
/// until the reset.
pub fn bucket_is_learned_and_waited_for<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::ok("{}")
            .header("x-ratelimit-bucket", "b1")
            .header("x-ratelimit-limit", "1")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset-after", "0.3"),
    );
    let client = client::<H>(&url, |b| b);
    get::<H>(&client, "/channels/1/messages").unwrap();
    get::<H>(&client, "/channels/1/messages").unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(250),
        "second request after {gap:?}"
    );
}

/// A route 429 is waited out, then retried.
pub fn route_429_is_waited_out<H: BotHarness>() {
    let reply = Reply::status(
        429,
        r#"{"message":"slow","retry_after":0.2,"global":false}"#,
    )
    .header("x-ratelimit-scope", "user");
    assert_429_is_waited_out::<H>(reply, "/channels/1");
}

/// A global 429 is waited out, then retried.
pub fn global_429_is_waited_out<H: BotHarness>() {
    let reply = Reply::status(429, r#"{"message":"slow","retry_after":0.2,"global":true}"#)
        .header("x-ratelimit-global", "true")
        .header("x-ratelimit-scope", "global");
    assert_429_is_waited_out::<H>(reply, "/guilds/1");
}

/// `GET path` answered first with `reply` (a 429 asking for 0.2 s) succeeds with a
/// second request at least 150 ms after the first.
fn assert_429_is_waited_out<H: BotHarness>(reply: Reply, path: &'static str) {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(reply);
    let client = client::<H>(&url, |b| b);
    get::<H>(&client, path).unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(150));
}

/// A 429 asking to wait past the maximum fails at once, without a retry.
pub fn max_rate_limit_exceeded_is_an_error<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::status(
        429,
        r#"{"message":"slow","retry_after":30,"global":false}"#,
    ));
    let client = client::<H>(&url, |b| b.max_rate_limit(Some(Duration::from_secs(1))));
    let error = get::<H>(&client, "/channels/1").unwrap_err();
    assert!(
        matches!(
            error,
            RequestError::Rest(RestError::RateLimitTooLong { .. })
        ),
        "{error:?}"
    );
    assert_eq!(mock.requests().len(), 1);
}

/// 5xx answers are retried `max_retries` times, then the call fails.
pub fn retries_are_exhausted_on_5xx<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    for _ in 0..3 {
        mock.push(Reply::status(502, "bad gateway"));
    }
    let client = client::<H>(&url, |b| b.max_retries(2));
    match get::<H>(&client, "/channels/1").unwrap_err() {
        RequestError::Rest(RestError::RetriesExhausted { attempts, .. }) => {
            assert_eq!(attempts, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.requests().len(), 3);
}

/// A connection dropped unanswered is retried; an answer slower than the read timeout
/// is a timeout, and a POST is not retried.
pub fn dropped_connection_is_retried_and_slow_answer_times_out<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::dropped());
    let client = client::<H>(&url, |b| b);
    get::<H>(&client, "/channels/1").unwrap();
    assert_eq!(mock.requests().len(), 2);

    let slow = MockDiscord::new();
    let url = slow.start().unwrap();
    slow.push(Reply::ok("{}").delayed(Duration::from_secs(3)));
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(url)
        .build()
        .unwrap();
    let mut settings = HttpSettings::default();
    settings.timeouts.read = Duration::from_millis(200);
    let client = H::client(config, settings, None);
    let error = bounded(move || {
        H::request(
            &client,
            Method::POST,
            "/channels/1/messages",
            RequestBody::Json("{}".into()),
        )
    })
    .unwrap_err();
    assert!(
        matches!(error, RequestError::Rest(RestError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(slow.requests().len(), 1);
}

/// A payload with a file goes as `multipart/form-data` (payload JSON and file parts),
/// and an interaction callback is sent without authentication.
pub fn multipart_upload<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::status(204, ""));
    let client = client::<H>(&url, |b| b);
    let payload = Payload::raw_json(&br#"{"type":4,"data":{"content":"hi"}}"#[..])
        .with_file(FilePart::memory("cat.txt", "meow meow"));
    let request = RestRequest::<NoContent>::new(
        Route::interaction_callback(twilight_model::id::Id::new(1), "itoken"),
        payload.into_body(),
    );
    bounded(move || H::call(&client, request)).unwrap();
    let requests = mock.requests();
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/v10/interactions/1/itoken/callback");
    assert!(
        request
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    let body = String::from_utf8_lossy(&request.body);
    assert!(body.contains("name=\"payload_json\""));
    assert!(body.contains("filename=\"cat.txt\""));
    assert!(body.contains("meow meow"));
    // Interaction routes are not authenticated.
    assert_eq!(request.header("authorization"), None);
}

/// A TLS connection verified against a custom CA; without that CA the handshake fails
/// (a connect error, not retried here) and nothing reaches the server.
pub fn tls_with_a_custom_ca<H: BotHarness>() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            )
            .unwrap(),
    );
    let mock = MockDiscord::new();
    let addr = mock
        .start_with(move |tcp| {
            let tls = rustls::ServerConnection::new(Arc::clone(&server_config)).ok()?;
            Some(rustls::StreamOwned::new(tls, tcp))
        })
        .unwrap();
    let url = format!("https://localhost:{}/api/v10", addr.port());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let settings = HttpSettings {
        tls: TlsVerification::Roots(Arc::new(roots)),
        ..HttpSettings::default()
    };
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .build()
        .unwrap();
    let client = H::client(config, settings, None);
    get::<H>(&client, "/users/@me").unwrap();
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(mock.requests()[0].header("authorization"), Some("Bot tok"));

    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .max_retries(0)
        .build()
        .unwrap();
    let client = H::client(config, HttpSettings::default(), None);
    let error = get::<H>(&client, "/users/@me").unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");
    assert_eq!(mock.requests().len(), 1);
}

/// Through an HTTP proxy: a `CONNECT` to the REST host with basic auth (not shown by
/// the settings' `Debug`), then the request itself through the tunnel.
pub fn proxy_connect_with_basic_auth<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let proxy = ConnectProxy::start().unwrap();
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .build()
        .unwrap();
    let settings = ProxySettings::new(&format!("http://{}", proxy.addr()))
        .unwrap()
        .with_basic_auth("user", "pass");
    assert!(!format!("{settings:?}").contains("dXNlcjpwYXNz"));
    let client = H::client(config, HttpSettings::default(), Some(settings));
    get::<H>(&client, "/users/@me").unwrap();
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "CONNECT");
    assert_eq!(
        seen[0].path,
        url.trim_start_matches("http://")
            .trim_end_matches("/api/v10")
    );
    assert_eq!(
        seen[0].header("proxy-authorization"),
        Some("Basic dXNlcjpwYXNz")
    );
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(mock.requests()[0].header("authorization"), Some("Bot tok"));
}

// ---------------------------------------------------------------------------------------
// Bot

/// Without a key, a bot's server discovers it with the bot token
/// (`GET /applications/@me`), once.
pub fn public_key_discovery_bot_token<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::ok(&format!(
        r#"{{"id":"1","verify_key":"{KEY_HEX}"}}"#
    )));
    let bot = bot::<H>().rest_url(url).build().unwrap();
    assert!(!H::has_interaction_server(&bot));
    on_bot::<H, _>(&bot, H::server).unwrap();
    assert!(H::has_interaction_server(&bot));
    assert_eq!(
        H::public_key(&bot).map(hex::encode),
        Some(KEY_HEX.to_owned())
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v10/applications/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bot tok"));
}

/// With a bearer token the key comes from `GET /oauth2/@me`; two concurrent starts make
/// one request.
pub fn public_key_discovery_bearer_token_single_flight<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::ok(&format!(
            r#"{{"application":{{"id":"1","verify_key":"{KEY_HEX}"}}}}"#
        ))
        .delayed(Duration::from_millis(100)),
    );
    let bot = bot::<H>()
        .token_type(TokenType::Bearer)
        .rest_url(url)
        .unmanaged()
        .build()
        .unwrap();
    let (first, second) = (bot.clone(), bot.clone());
    let (a, b) = bounded(move || {
        let other = thread::spawn(move || H::start(&second));
        let first = H::start(&first);
        (first, other.join().unwrap())
    });
    // One start wins; the other is refused (already running) or also succeeds waiting.
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v10/oauth2/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bearer tok"));
    assert_eq!(
        H::public_key(&bot).map(hex::encode),
        Some(KEY_HEX.to_owned())
    );
}

/// A public key that is not hex fails `build`.
pub fn bad_public_key_hex_fails_construction<H: BotHarness>() {
    let error = bot::<H>().public_key_hex("zz").build().unwrap_err();
    assert!(matches!(error, BotError::PublicKey(_)), "{error:?}");
}

/// A managed bot (the default) refuses `start`, `close`, `join` and `run`.
pub fn managed_bot_refuses_manual_lifecycle<H: BotHarness>() {
    let bot = bot::<H>().public_key_hex(KEY_HEX).build().unwrap();
    assert!(H::is_managed(&bot));
    on_bot::<H, _>(&bot, |bot| {
        assert!(matches!(H::start(bot), Err(LifecycleError::Managed)));
        assert!(matches!(H::close(bot), Err(LifecycleError::Managed)));
        assert!(matches!(H::join(bot), Err(LifecycleError::Managed)));
        assert!(matches!(H::run(bot), Err(LifecycleError::Managed)));
    });
}

/// A managed bot starts (callbacks see it not yet alive) and closes (alive until then)
/// with its server's lifespan.
pub fn managed_bot_runs_with_the_server_lifespan<H: BotHarness>() {
    let bot = bot::<H>().public_key_hex(KEY_HEX).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    H::add_startup_callback(&bot, move |bot| {
        log.lock().unwrap().push(("start", H::is_alive(&bot)));
    });
    let log = Arc::clone(&seen);
    H::add_shutdown_callback(&bot, move |bot| {
        log.lock().unwrap().push(("stop", H::is_alive(&bot)));
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let served = on_bot::<H, _>(&bot, move |bot| H::serve(bot, listener)).unwrap();
    let mut running = served.running;
    running.trigger_shutdown(); // serving stops right after startup
    bounded(move || running.join()).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("start", false), ("stop", true)]
    );
    assert!(!H::is_alive(&bot));
}

/// An unmanaged bot cannot be started (or run) twice.
pub fn unmanaged_start_twice_is_an_error<H: BotHarness>() {
    let bot = unmanaged_bot::<H>();
    on_bot::<H, _>(&bot, |bot| {
        H::start(bot).unwrap();
        assert!(H::is_alive(bot));
        assert!(matches!(H::start(bot), Err(LifecycleError::AlreadyRunning)));
        assert!(matches!(H::run(bot), Err(LifecycleError::AlreadyRunning)));
    });
}

/// An unmanaged bot that is not running cannot be closed or joined.
pub fn unmanaged_close_when_stopped_is_an_error<H: BotHarness>() {
    let bot = unmanaged_bot::<H>();
    on_bot::<H, _>(&bot, |bot| {
        assert!(matches!(H::close(bot), Err(LifecycleError::NotRunning)));
        assert!(matches!(H::join(bot), Err(LifecycleError::NotRunning)));
    });
}

/// `run` returns once another thread closes the bot.
pub fn unmanaged_run_until_closed<H: BotHarness>() {
    let bot = unmanaged_bot::<H>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    H::add_startup_callback(&bot, move |_bot| {
        let _ = started_tx.lock().unwrap().send(());
    });
    let runner = bot.clone();
    let run = thread::spawn(move || H::run(&runner));
    started_rx.recv_timeout(LIMIT).unwrap();
    on_bot::<H, _>(&bot, H::close).unwrap();
    bounded(move || run.join().unwrap()).unwrap();
    assert!(!H::is_alive(&bot));
}

/// Removing a callback twice, or from the other phase, is an error.
pub fn removing_an_unknown_callback_is_an_error<H: BotHarness>() {
    let bot = bot::<H>().public_key_hex(KEY_HEX).build().unwrap();
    let id = H::add_startup_callback(&bot, |_bot| {});
    H::remove_startup_callback(&bot, id).unwrap();
    assert!(H::remove_startup_callback(&bot, id).is_err());
    assert!(H::remove_shutdown_callback(&bot, id).is_err());
}

/// `Bot::sync_commands` finds the application's id, lists the guild's commands and
/// overwrites them when they differ; a second sync of the same set sends no overwrite.
pub fn bot_syncs_commands<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let application = format!(
        r#"{{"id":"42","name":"app","description":"","icon":null,"bot_public":true,"bot_require_code_grant":false,"verify_key":"{KEY_HEX}","flags":0}}"#
    );
    let desired =
        parse_commands(br#"[{"name":"ping","description":"Is the bot alive?"}]"#).unwrap();
    let stored = serde_json::to_string(&desired).unwrap();
    for reply in [&application, "[]", &stored, &application, &stored] {
        mock.push(Reply::ok(reply));
    }
    let bot = bot::<H>()
        .public_key_hex(KEY_HEX)
        .rest_url(&url)
        .unmanaged()
        .build()
        .unwrap();
    let guild = Some(twilight_model::id::Id::new(7));
    let first = {
        let desired = desired.clone();
        on_bot::<H, _>(&bot, move |bot| H::sync_commands(bot, guild, desired))
    };
    let Ok(SyncOutcome::Overwritten { changes, stored }) = first else {
        panic!("the first sync overwrites: {first:?}");
    };
    assert_eq!((changes.len(), stored.len()), (1, 1));
    let second = on_bot::<H, _>(&bot, move |bot| H::sync_commands(bot, guild, desired));
    assert!(matches!(second, Ok(SyncOutcome::UpToDate)), "{second:?}");
    let seen: Vec<(String, String)> = mock
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.method,
                r.path.split('?').next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let commands = "/api/v10/applications/42/guilds/7/commands";
    let app = "/api/v10/applications/@me";
    let expected = [
        ("GET", app),
        ("GET", commands),
        ("PUT", commands),
        ("GET", app),
        ("GET", commands),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(seen, expected);
}
