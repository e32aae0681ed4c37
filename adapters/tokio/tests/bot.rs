//! The tokio REST client and bot against the mock Discord of `yuyo-conformance` on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use yuyo_conformance::mock_discord::{ConnectProxy, MockDiscord, Reply};
use yuyo_core::multipart::FilePart;
use yuyo_core::rest::{
    Backoff, NoContent, Payload, RequestBody, RestConfig, RestError, RestRequest, TokenType,
};
use yuyo_tokio::bot::{Bot, LifecycleError};
use yuyo_tokio::rest::{HttpSettings, ProxySettings, RestClient, TlsVerification};

const LIMIT: Duration = Duration::from_secs(20);
const KEY_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        jitter_seed: None,
    }
}

fn client(
    url: &str,
    f: impl FnOnce(yuyo_core::rest::RestConfigBuilder) -> yuyo_core::rest::RestConfigBuilder,
) -> RestClient {
    let config = f(RestConfig::builder()
        .token("tok")
        .rest_url(url)
        .backoff(fast_backoff()))
    .build()
    .unwrap();
    RestClient::new(config, HttpSettings::default(), None).unwrap()
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long")
}

#[tokio::test]
async fn token_header_user_agent_and_keep_alive() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let client = client(&url, |b| b);
    bounded(async {
        for _ in 0..2 {
            client
                .request(http::Method::GET, "/users/@me", RequestBody::Empty)
                .await
                .unwrap();
        }
    })
    .await;
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
}

#[tokio::test]
async fn bucket_is_learned_and_waited_for() {
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
    bounded(async {
        for _ in 0..2 {
            client
                .request(
                    http::Method::GET,
                    "/channels/1/messages",
                    RequestBody::Empty,
                )
                .await
                .unwrap();
        }
    })
    .await;
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(250),
        "second request after {gap:?}"
    );
}

#[tokio::test]
async fn route_429_is_waited_out() {
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
    bounded(client.request(http::Method::GET, "/channels/1", RequestBody::Empty))
        .await
        .unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(150));
}

#[tokio::test]
async fn global_429_is_waited_out() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(
        Reply::status(429, r#"{"message":"slow","retry_after":0.2,"global":true}"#)
            .header("x-ratelimit-global", "true")
            .header("x-ratelimit-scope", "global"),
    );
    let client = client(&url, |b| b);
    bounded(client.request(http::Method::GET, "/guilds/1", RequestBody::Empty))
        .await
        .unwrap();
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(150));
}

#[tokio::test]
async fn max_rate_limit_exceeded_is_an_error() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::status(
        429,
        r#"{"message":"slow","retry_after":30,"global":false}"#,
    ));
    let client = client(&url, |b| b.max_rate_limit(Some(Duration::from_secs(1))));
    let error = bounded(client.request(http::Method::GET, "/channels/1", RequestBody::Empty))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            yuyo_tokio::rest::RequestError::Rest(RestError::RateLimitTooLong { .. })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn retries_are_exhausted_on_5xx() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    for _ in 0..3 {
        mock.push(Reply::status(502, "bad gateway"));
    }
    let client = client(&url, |b| b.max_retries(2));
    let error = bounded(client.request(http::Method::GET, "/channels/1", RequestBody::Empty))
        .await
        .unwrap_err();
    match error {
        yuyo_tokio::rest::RequestError::Rest(RestError::RetriesExhausted { attempts, .. }) => {
            assert_eq!(attempts, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dropped_connection_and_slow_answer() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::dropped());
    let client = client(&url, |b| b);
    bounded(client.request(http::Method::GET, "/channels/1", RequestBody::Empty))
        .await
        .unwrap();
    assert_eq!(mock.requests().len(), 2);

    // A slow answer past the read timeout is a timeout (a POST is not retried).
    let slow = MockDiscord::new();
    let url = slow.start().unwrap();
    slow.push(Reply {
        delay: Some(Duration::from_secs(5)),
        ..Reply::ok("{}")
    });
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
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            yuyo_tokio::rest::RequestError::Rest(RestError::Timeout { .. })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn multipart_upload() {
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
    bounded(client.call(request)).await.unwrap();
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

#[tokio::test]
async fn public_key_discovery_bot_token() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply::ok(&format!(
        r#"{{"id":"1","verify_key":"{KEY_HEX}"}}"#
    )));
    let bot = Bot::builder("tok").rest_url(url).build().unwrap();
    assert!(bot.interaction_server().is_none());
    let _server = bounded(bot.server()).await.unwrap();
    assert!(bot.interaction_server().is_some());
    assert_eq!(bot.public_key().map(hex_of), Some(KEY_HEX.to_owned()));
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v10/applications/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bot tok"));
}

#[tokio::test]
async fn public_key_discovery_bearer_token_single_flight() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    mock.push(Reply {
        delay: Some(Duration::from_millis(100)),
        ..Reply::ok(&format!(
            r#"{{"application":{{"id":"1","verify_key":"{KEY_HEX}"}}}}"#
        ))
    });
    let bot = Bot::builder("tok")
        .token_type(TokenType::Bearer)
        .rest_url(url)
        .unmanaged()
        .build()
        .unwrap();
    let other = bot.clone();
    let (a, b) = bounded(async { tokio::join!(bot.start(), other.start()) }).await;
    // One start wins; the other is refused (already running) or also succeeds waiting.
    assert!(a.is_ok() || b.is_ok());
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/v10/oauth2/@me");
    assert_eq!(requests[0].header("authorization"), Some("Bearer tok"));
    assert_eq!(bot.public_key().map(hex_of), Some(KEY_HEX.to_owned()));
}

fn hex_of(key: [u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn bad_public_key_hex_fails_construction() {
    let error = Bot::builder("tok")
        .public_key_hex("zz")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, yuyo_tokio::bot::BotError::PublicKey(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn managed_bot_refuses_manual_lifecycle() {
    let bot = Bot::builder("tok").public_key_hex(KEY_HEX).build().unwrap();
    assert!(bot.is_managed());
    assert!(matches!(bot.start().await, Err(LifecycleError::Managed)));
    assert!(matches!(bot.close().await, Err(LifecycleError::Managed)));
    assert!(matches!(bot.join().await, Err(LifecycleError::Managed)));
    assert!(matches!(bot.run().await, Err(LifecycleError::Managed)));
}

#[tokio::test]
async fn managed_bot_runs_with_the_server_lifespan() {
    let bot = Bot::builder("tok").public_key_hex(KEY_HEX).build().unwrap();
    let started = Arc::new(Mutex::new(Vec::new()));
    let log = started.clone();
    bot.add_startup_callback(move |bot: Bot| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(("start", bot.is_alive()));
            Ok(())
        }
    });
    let log = started.clone();
    bot.add_shutdown_callback(move |bot: Bot| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(("stop", bot.is_alive()));
            Ok(())
        }
    });
    let server = bot.server().await.unwrap();
    let handle = server.shutdown_handle();
    handle.shutdown(); // serve stops right after startup
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    bounded(server.serve(listener)).await.unwrap();
    assert_eq!(
        *started.lock().unwrap(),
        vec![("start", false), ("stop", true)]
    );
    assert!(!bot.is_alive());
}

#[tokio::test]
async fn unmanaged_start_twice_is_an_error() {
    let bot = Bot::builder("tok")
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap();
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
}

#[tokio::test]
async fn unmanaged_close_when_stopped_is_an_error() {
    let bot = Bot::builder("tok")
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap();
    assert!(matches!(bot.close().await, Err(LifecycleError::NotRunning)));
    assert!(matches!(bot.join().await, Err(LifecycleError::NotRunning)));
}

#[tokio::test]
async fn unmanaged_run_until_closed() {
    let bot = Bot::builder("tok")
        .public_key_hex(KEY_HEX)
        .unmanaged()
        .build()
        .unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    bot.add_startup_callback(move |_bot: Bot| {
        let tx = started_tx.lock().unwrap().take();
        async move {
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
            Ok(())
        }
    });
    let runner = bot.clone();
    let run = tokio::spawn(async move { runner.run().await });
    bounded(started_rx).await.unwrap();
    bot.close().await.unwrap();
    bounded(run).await.unwrap().unwrap();
    assert!(!bot.is_alive());
}

#[tokio::test]
async fn removing_an_unknown_callback_is_an_error() {
    let bot = Bot::builder("tok").public_key_hex(KEY_HEX).build().unwrap();
    let id = bot.add_startup_callback(|_bot: Bot| async { Ok(()) });
    bot.remove_startup_callback(id).unwrap();
    assert!(bot.remove_startup_callback(id).is_err());
    assert!(bot.remove_shutdown_callback(id).is_err());
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    use yuyo_tokio::rest::rustls;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .unwrap();
    let server_config = Arc::new(server_config);
    let mock = MockDiscord::new();
    let port = mock
        .start_with(move |tcp| {
            let tls = rustls::ServerConnection::new(Arc::clone(&server_config)).ok()?;
            Some(rustls::StreamOwned::new(tls, tcp))
        })
        .unwrap()
        .port();
    let url = format!("https://localhost:{port}/api/v10");
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
    bounded(client.request(http::Method::GET, "/users/@me", RequestBody::Empty))
        .await
        .unwrap();
    assert_eq!(mock.requests().len(), 1);

    // Without the CA the handshake fails (a connect error, retried, then given up).
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .max_retries(0)
        .build()
        .unwrap();
    let client = RestClient::new(config, HttpSettings::default(), None).unwrap();
    let error = bounded(client.request(http::Method::GET, "/users/@me", RequestBody::Empty))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");
}

#[tokio::test]
async fn proxy_connect_with_basic_auth() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let proxy = ConnectProxy::start().unwrap();
    let proxy_addr = proxy.addr();
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .build()
        .unwrap();
    let settings = ProxySettings::new(&format!("http://{proxy_addr}"))
        .unwrap()
        .with_basic_auth("user", "pass");
    let client = RestClient::new(config, HttpSettings::default(), Some(settings)).unwrap();
    bounded(client.request(http::Method::GET, "/users/@me", RequestBody::Empty))
        .await
        .unwrap();
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
