//! The smol REST client and bot against the mock Discord of `yuyo-conformance` on
//! 127.0.0.1. Every test is bounded by `LIMIT`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Timer;
use futures_lite::future;
use yuyo_conformance::mock_discord::{ConnectProxy, MockDiscord, Reply};
use yuyo_core::multipart::FilePart;
use yuyo_core::rest::{
    Backoff, NoContent, Payload, RequestBody, RestConfig, RestConfigBuilder, RestError,
    RestRequest, TokenType,
};
use yuyo_smol::bot::{Bot, BotError, LifecycleError};
use yuyo_smol::rest::{
    HttpSettings, ProxySettings, RequestError, RestClient, TlsVerification, rustls,
};

const LIMIT: Duration = Duration::from_secs(20);
const KEY_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// Runs `f` to completion, failing the test if it takes longer than `LIMIT`.
fn bounded<F: Future>(f: F) -> F::Output {
    async_io::block_on(future::or(f, async {
        Timer::after(LIMIT).await;
        panic!("test took too long")
    }))
}

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        jitter_seed: None,
    }
}

fn client(url: &str, f: impl FnOnce(RestConfigBuilder) -> RestConfigBuilder) -> RestClient {
    let config = f(RestConfig::builder()
        .token("tok")
        .rest_url(url)
        .backoff(fast_backoff()))
    .build()
    .unwrap();
    RestClient::new(config, HttpSettings::default(), None).unwrap()
}

fn get(client: &RestClient, path: &'static str) -> Result<(), RequestError> {
    bounded(client.request(http::Method::GET, path, RequestBody::Empty)).map(drop)
}

fn hex_of(key: [u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn token_header_user_agent_and_keep_alive() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let client = client(&url, |b| b);
    get(&client, "/users/@me").unwrap();
    get(&client, "/users/@me").unwrap();
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
    assert_eq!(client.transport().idle_connections(), 1);
    assert!(!format!("{client:?}").contains("tok\""), "{client:?}");
}

#[test]
fn bucket_is_learned_and_waited_for() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::ok("{}")
            .header("x-ratelimit-bucket", "b1")
            .header("x-ratelimit-limit", "1")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset-after", "0.3"),
    );
    let client = client(&url, |b| b);
    get(&client, "/channels/1/messages").unwrap();
    get(&client, "/channels/1/messages").unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(250),
        "second request after {gap:?}"
    );
}

#[test]
fn route_429_is_waited_out() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::status(
            429,
            r#"{"message":"slow","retry_after":0.2,"global":false}"#,
        )
        .header("x-ratelimit-scope", "user"),
    );
    let client = client(&url, |b| b);
    get(&client, "/channels/1").unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(150));
}

#[test]
fn global_429_is_waited_out() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::status(429, r#"{"message":"slow","retry_after":0.2,"global":true}"#)
            .header("x-ratelimit-global", "true")
            .header("x-ratelimit-scope", "global"),
    );
    let client = client(&url, |b| b);
    get(&client, "/guilds/1").unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(150));
}

#[test]
fn max_rate_limit_exceeded_is_an_error() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::status(
        429,
        r#"{"message":"slow","retry_after":30,"global":false}"#,
    ));
    let client = client(&url, |b| b.max_rate_limit(Some(Duration::from_secs(1))));
    let error = get(&client, "/channels/1").unwrap_err();
    assert!(
        matches!(
            error,
            RequestError::Rest(RestError::RateLimitTooLong { .. })
        ),
        "{error:?}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn retries_are_exhausted_on_5xx() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    for _ in 0..3 {
        mock.push(Reply::status(502, "bad gateway"));
    }
    let client = client(&url, |b| b.max_retries(2));
    match get(&client, "/channels/1").unwrap_err() {
        RequestError::Rest(RestError::RetriesExhausted { attempts, .. }) => {
            assert_eq!(attempts, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn dropped_connection_is_retried_and_slow_answer_times_out() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::dropped());
    let client = client(&url, |b| b);
    get(&client, "/channels/1").unwrap();
    assert_eq!(mock.requests().len(), 2);

    // A slow answer past the read timeout is a timeout (a POST is not retried).
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
    let client = RestClient::new(config, settings, None).unwrap();
    let error = bounded(client.request(
        http::Method::POST,
        "/channels/1/messages",
        RequestBody::Json("{}".into()),
    ))
    .unwrap_err();
    assert!(
        matches!(error, RequestError::Rest(RestError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(slow.requests().len(), 1);
}

#[test]
fn multipart_upload() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::status(204, ""));
    let client = client(&url, |b| b);
    let payload = Payload::raw_json(&br#"{"type":4,"data":{"content":"hi"}}"#[..])
        .with_file(FilePart::memory("cat.txt", "meow meow"));
    let request = RestRequest::<NoContent>::create_interaction_response(
        twilight_model::id::Id::new(1),
        "itoken",
        payload,
    );
    bounded(client.call(request)).unwrap();
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
    assert!(body.contains("filename=\"cat.txt\""));
    assert!(body.contains("meow meow"));
    assert_eq!(request.header("authorization"), None);
}

#[test]
fn public_key_discovery_bot_token() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::ok(&format!(
        r#"{{"id":"1","verify_key":"{KEY_HEX}"}}"#
    )));
    let bot = Bot::builder("tok").rest_url(url).build().unwrap();
    assert!(bot.interaction_server().is_none());
    bounded(bot.server()).unwrap();
    assert!(bot.interaction_server().is_some());
    assert_eq!(bot.public_key().map(hex_of), Some(KEY_HEX.to_owned()));
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v10/applications/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bot tok"));
}

#[test]
fn public_key_discovery_bearer_token_single_flight() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::ok(&format!(
            r#"{{"application":{{"id":"1","verify_key":"{KEY_HEX}"}}}}"#
        ))
        .delayed(Duration::from_millis(100)),
    );
    let bot = Bot::builder("tok")
        .token_type(TokenType::Bearer)
        .rest_url(url)
        .unmanaged()
        .build()
        .unwrap();
    let other = bot.clone();
    let (a, b) = bounded(future::zip(bot.start(), other.start()));
    // One start wins; the other is refused (already running) or also succeeds waiting.
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v10/oauth2/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bearer tok"));
    assert_eq!(bot.public_key().map(hex_of), Some(KEY_HEX.to_owned()));
}

#[test]
fn bad_public_key_hex_fails_construction() {
    let error = Bot::builder("tok")
        .public_key_hex("zz")
        .build()
        .unwrap_err();
    assert!(matches!(error, BotError::PublicKey(_)), "{error:?}");
}

#[test]
fn managed_bot_refuses_manual_lifecycle() {
    let bot = Bot::builder("tok").public_key_hex(KEY_HEX).build().unwrap();
    assert!(bot.is_managed());
    bounded(async {
        assert!(matches!(bot.start().await, Err(LifecycleError::Managed)));
        assert!(matches!(bot.close().await, Err(LifecycleError::Managed)));
        assert!(matches!(bot.join().await, Err(LifecycleError::Managed)));
        assert!(matches!(bot.run().await, Err(LifecycleError::Managed)));
    });
}

#[test]
fn managed_bot_runs_with_the_server_lifespan() {
    let bot = Bot::builder("tok").public_key_hex(KEY_HEX).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bot.add_startup_callback(move |bot: Bot| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(("start", bot.is_alive()));
            Ok(())
        }
    });
    let log = seen.clone();
    bot.add_shutdown_callback(move |bot: Bot| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(("stop", bot.is_alive()));
            Ok(())
        }
    });
    bounded(async {
        let server = bot
            .server()
            .await
            .unwrap()
            .with_threads(std::num::NonZeroUsize::MIN);
        server.shutdown_handle().shutdown(); // serve stops right after startup
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        server.serve(listener).await
    })
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("start", false), ("stop", true)]
    );
    assert!(!bot.is_alive());
}

#[test]
fn unmanaged_start_twice_is_an_error() {
    let bot = Bot::builder("tok")
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap();
    bounded(async {
        bot.start().await.unwrap();
        assert!(bot.is_alive());
        assert!(matches!(
            bot.start().await,
            Err(LifecycleError::AlreadyRunning)
        ));
        assert!(matches!(
            bot.run().await,
            Err(LifecycleError::AlreadyRunning)
        ));
    });
}

#[test]
fn unmanaged_close_when_stopped_is_an_error() {
    let bot = Bot::builder("tok")
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap();
    bounded(async {
        assert!(matches!(bot.close().await, Err(LifecycleError::NotRunning)));
        assert!(matches!(bot.join().await, Err(LifecycleError::NotRunning)));
    });
}

#[test]
fn unmanaged_run_until_closed() {
    let bot = Bot::builder("tok")
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap();
    let (started_tx, started_rx) = async_channel::bounded::<()>(1);
    bot.add_startup_callback(move |_bot: Bot| {
        let tx = started_tx.clone();
        async move {
            let _ = tx.send(()).await;
            Ok(())
        }
    });
    let runner = bot.clone();
    bounded(async {
        let run = runner.run();
        let close = async {
            started_rx.recv().await.unwrap();
            bot.close().await.unwrap();
        };
        let (ran, ()) = future::zip(run, close).await;
        ran.unwrap();
    });
    assert!(!bot.is_alive());
}

#[test]
fn removing_an_unknown_callback_is_an_error() {
    let bot = Bot::builder("tok").public_key_hex(KEY_HEX).build().unwrap();
    let id = bot.add_startup_callback(|_bot: Bot| async { Ok(()) });
    bot.remove_startup_callback(id).unwrap();
    assert!(bot.remove_startup_callback(id).is_err());
    assert!(bot.remove_shutdown_callback(id).is_err());
}

#[test]
fn tls_with_a_custom_ca() {
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
    let client = RestClient::new(config, settings, None).unwrap();
    get(&client, "/users/@me").unwrap();
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(mock.requests()[0].header("authorization"), Some("Bot tok"));

    // Without the CA the handshake fails (a connect error, not retried here).
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .max_retries(0)
        .build()
        .unwrap();
    let client = RestClient::new(config, HttpSettings::default(), None).unwrap();
    let error = get(&client, "/users/@me").unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn proxy_connect_with_basic_auth() {
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
    let client = RestClient::new(config, HttpSettings::default(), Some(settings)).unwrap();
    get(&client, "/users/@me").unwrap();
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

#[test]
fn managed_bot_serves_on_the_given_executor() {
    use yuyo_conformance::client::{Client, Request};
    use yuyo_conformance::{demo, fixtures};

    let executor = Arc::new(async_executor::Executor::new());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let runner = Arc::clone(&executor);
    let worker = std::thread::spawn(move || {
        async_io::block_on(runner.run(async {
            let _ = stop_rx.recv().await;
        }));
    });
    let bot = Bot::builder("tok")
        .public_key_hex(demo::DEMO_PUBLIC_KEY_HEX)
        .executor(Arc::clone(&executor))
        .build()
        .unwrap();
    assert!(bot.executor().is_some());
    let observer = bot.clone();
    bounded(async {
        let server = bot.server().await.unwrap();
        let handle = server.shutdown_handle();
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = blocking::unblock(move || {
            let mut client = Client::connect(addr).unwrap();
            let status = client
                .roundtrip(&Request::signed(fixtures::PING))
                .unwrap()
                .status;
            let alive = observer.is_alive();
            handle.shutdown();
            (status, alive)
        });
        let (served, (status, alive)) = future::zip(server.serve(listener), client).await;
        served.unwrap();
        assert_eq!(status, 200);
        assert!(alive, "the lifespan started the bot before serving");
    });
    assert!(!bot.is_alive());
    drop(stop_tx);
    worker.join().unwrap();
}
