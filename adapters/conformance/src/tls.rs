//! HTTPS served by the core session itself, black-box over real sockets: a test CA and
//! server certificates made with rcgen, a synchronous rustls client trusting that CA
//! ([`TestPki::connect`]), and the cases [`tls_suite!`](crate::tls_suite) runs against
//! every adapter's [`Harness`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use yuyo_core::rest::transport::rustls;
use yuyo_core::server::tls::ServerTls;
use yuyo_core::service::{ServeOptions, Service};

use crate::client::{Client, IO_TIMEOUT, Request, Response};
use crate::demo::{self, demo_verifier};
use crate::fixtures::{self, ECHO_TEXT};
use crate::{Harness, Running};

/// The head deadline of the TLS test services: a stalled handshake is cut by it.
pub const HEAD_TIMEOUT: Duration = Duration::from_millis(700);

/// A test certificate authority that signs server certificates for `localhost`.
pub struct TestPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

/// A server certificate (for `localhost`) and its key, as PEM and DER.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER (what the client sees as the peer certificate).
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// A fresh CA.
    #[must_use]
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "yuyo test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Self { ca }
    }

    /// A certificate for `localhost` signed by the CA, with this serial number and
    /// common name `yuyo test server <serial>`.
    #[must_use]
    pub fn server_cert(&self, serial: u64) -> ServerCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("yuyo test server {serial}"),
        );
        let cert = params.signed_by(&key, &self.ca).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// The CA certificate, PEM (for clients outside the process).
    #[must_use]
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A client configuration trusting only this CA, offering ALPN `http/1.1`.
    #[must_use]
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A TLS client to `addr` (as `localhost`), its handshake done.
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<Client> {
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(self.client_config(), name)
            .map_err(std::io::Error::other)?;
        let mut client = Client::over_tls(tcp, conn)?;
        client.complete_handshake()?;
        Ok(client)
    }
}

/// The [`Harness`] `H` serving HTTPS (a fresh test CA's certificate) for the plain cases:
/// [`Client::connect`] to its address speaks TLS, so the cases of
/// [`suite_over_tls!`](crate::suite_over_tls) run unchanged over TLS.
#[derive(Debug)]
pub struct OverTls<H>(PhantomData<H>);

impl<H: Harness> Harness for OverTls<H> {
    fn spawn(service: Service, listener: TcpListener) -> Running {
        let pki = TestPki::new();
        let cert = pki.server_cert(1);
        let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
        let addr = listener.local_addr().unwrap();
        crate::client::serve_tls_at(addr, Some(pki.client_config()));
        let inner = Arc::new(Mutex::new(Some(H::spawn(service.with_tls(tls), listener))));
        let trigger = Arc::clone(&inner);
        Running::new(
            addr,
            move || {
                if let Some(running) = trigger.lock().unwrap().as_mut() {
                    running.trigger_shutdown();
                }
            },
            move || {
                let running = inner.lock().unwrap().take();
                let result = running.map_or(Ok(()), Running::join);
                crate::client::serve_tls_at(addr, None);
                result
            },
        )
    }
}

/// The demo service served over `tls`, with a short head deadline.
fn tls_service(tls: ServerTls) -> Service {
    let mut options = ServeOptions::default();
    options.http.head_timeout = HEAD_TIMEOUT;
    options.grace_period = Duration::from_secs(10);
    demo::demo_service(demo_verifier())
        .with_options(options)
        .with_tls(tls)
}

/// A test CA, its first server certificate (serial 1), and a server serving the demo
/// handlers over TLS with it.
fn start<H: Harness>() -> (TestPki, ServerCert, ServerTls, Running) {
    let pki = TestPki::new();
    let cert = pki.server_cert(1);
    let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let running = H::spawn(tls_service(tls.clone()), listener);
    (pki, cert, tls, running)
}

fn assert_pong(response: &Response) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"type": 1}));
}

fn peer_certificate(client: &Client) -> Vec<u8> {
    let tls = client.tls().expect("a TLS client");
    let certs = tls.peer_certificates().expect("the server's certificates");
    certs[0].to_vec()
}

/// A signed PING over TLS is answered `{"type":1}`.
pub fn ping_over_tls<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let mut client = pki.connect(running.addr).unwrap();
    assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    drop(client);
    running.stop().unwrap();
}

/// A signed command over TLS gets its handler's reply.
pub fn command_over_tls<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let mut client = pki.connect(running.addr).unwrap();
    let response = client
        .roundtrip(&Request::signed(fixtures::COMMAND_ECHO))
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["data"]["content"], ECHO_TEXT);
    drop(client);
    running.stop().unwrap();
}

/// Two requests on one TLS connection, and pipelined ones, are all answered in order.
pub fn keep_alive_over_tls<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let mut client = pki.connect(running.addr).unwrap();
    assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    let echo = client
        .roundtrip(&Request::signed(fixtures::COMMAND_ECHO))
        .unwrap();
    assert_eq!(echo.json()["data"]["content"], ECHO_TEXT);
    let mut pipelined = Request::signed(fixtures::PING).to_bytes();
    pipelined.extend(Request::signed(fixtures::COMMAND_ECHO).to_bytes());
    client.send(&pipelined).unwrap();
    assert_pong(&client.response().unwrap());
    assert_eq!(
        client.response().unwrap().json()["data"]["content"],
        ECHO_TEXT
    );
    drop(client);
    running.stop().unwrap();
}

/// ALPN negotiates `http/1.1`.
pub fn alpn_is_http11<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let client = pki.connect(running.addr).unwrap();
    let tls = client.tls().unwrap();
    assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(client);
    running.stop().unwrap();
}

/// A response with `Connection: close` ends with close_notify before the close: the
/// client reads a clean end of the TLS stream, not a truncation.
pub fn close_sends_close_notify<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let mut client = pki.connect(running.addr).unwrap();
    let request = Request::signed(fixtures::PING).set("connection", "close");
    assert_pong(&client.roundtrip(&request).unwrap());
    // rustls reports a close without close_notify as an UnexpectedEof error.
    let rest = client.read_to_close().expect("a clean TLS close");
    assert!(rest.is_empty());
    running.stop().unwrap();
}

/// A client that stalls mid-handshake is closed at the head deadline, while another
/// TLS client is served meanwhile.
pub fn stalled_handshake_is_cut_at_the_head_deadline<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    // Taken before connecting: the server's head deadline runs from its accept, later.
    let began = Instant::now();
    let mut stalled = TcpStream::connect_timeout(&running.addr, IO_TIMEOUT).unwrap();
    stalled.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // A handshake record header announcing 512 bytes, then 3 of them: never completed.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .unwrap();
    let mut client = pki.connect(running.addr).unwrap();
    assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    let mut buf = [0_u8; 64];
    let read = stalled.read(&mut buf);
    let took = began.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stalled handshake was not closed"
    );
    assert!(
        took >= HEAD_TIMEOUT,
        "closed before the head deadline: {took:?}"
    );
    assert!(took < IO_TIMEOUT, "closed too late: {took:?}");
    // The other connection lives on.
    assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    drop(client);
    running.stop().unwrap();
}

/// Plaintext HTTP on a TLS port is closed (after at most a TLS alert, never an HTTP
/// answer), and the next TLS client is served.
pub fn plaintext_on_a_tls_port_is_closed<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let mut plain = Client::connect(running.addr).unwrap();
    plain
        .send(&Request::signed(fixtures::PING).to_bytes())
        .unwrap();
    let answer = plain.read_to_close().unwrap();
    assert!(!answer.starts_with(b"HTTP"), "answered plaintext HTTP");
    if let Some(&content_type) = answer.first() {
        assert_eq!(content_type, 0x15, "not a TLS alert record: {answer:?}");
    }
    let mut client = pki.connect(running.addr).unwrap();
    assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    drop(client);
    running.stop().unwrap();
}

/// A client that does not trust the server's certificate fails its handshake; the
/// server is unaffected.
pub fn untrusted_client_fails_without_harm<H: Harness>() {
    let (pki, _, _, running) = start::<H>();
    let other = TestPki::new();
    assert!(other.connect(running.addr).is_err());
    let mut client = pki.connect(running.addr).unwrap();
    assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    drop(client);
    running.stop().unwrap();
}

/// A fresh directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "yuyo-tls-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reloading the certificate files: a keep-alive connection opened before the reload
/// keeps working (with the old certificate), a new connection sees the new one.
pub fn reload_keeps_open_connections_and_serves_the_new_certificate<H: Harness>() {
    let pki = TestPki::new();
    let (first, second) = (pki.server_cert(1), pki.server_cert(2));
    let dir = temp_dir();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &first.cert_pem).unwrap();
    std::fs::write(&key_path, &first.key_pem).unwrap();
    let tls = ServerTls::from_pem_files(&cert_path, &key_path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let running = H::spawn(tls_service(tls.clone()), listener);

    let mut before = pki.connect(running.addr).unwrap();
    assert_pong(&before.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    assert_eq!(peer_certificate(&before), first.der.to_vec());

    std::fs::write(&cert_path, &second.cert_pem).unwrap();
    std::fs::write(&key_path, &second.key_pem).unwrap();
    tls.reload_from_files().unwrap();

    // The connection made before the reload is served on, with its own configuration.
    assert_pong(&before.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    let mut after = pki.connect(running.addr).unwrap();
    assert_eq!(peer_certificate(&after), second.der.to_vec());
    assert_ne!(first.der, second.der);
    assert_pong(&after.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    assert_pong(&before.roundtrip(&Request::signed(fixtures::PING)).unwrap());
    drop((before, after));
    running.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Peers that stall mid-handshake and fill the connection cap do not stop fresh TLS
/// clients: at the cap they are evicted (and cut by the pressure deadline), so each
/// fresh client gets its PONG promptly, handshake included.
pub fn stalled_handshakes_at_the_cap_do_not_starve<H: Harness>() {
    const CAP: usize = 16;
    const ATTACKERS: usize = 24;
    const FRESH_DEADLINE: Duration = Duration::from_secs(2);
    let pki = TestPki::new();
    let cert = pki.server_cert(1);
    let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
    let mut options = ServeOptions {
        max_connections: CAP,
        grace_period: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    // A long usual head deadline: only the pressure rule and eviction can save the day.
    options.http.head_timeout = Duration::from_secs(30);
    let service = demo::demo_service(demo_verifier())
        .with_options(options)
        .with_tls(tls);
    let slots = service.slots().clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let running = H::spawn(service, listener);
    let attackers: Vec<TcpStream> = (0..ATTACKERS)
        .filter_map(|_| {
            let mut stream = TcpStream::connect_timeout(&running.addr, IO_TIMEOUT).ok()?;
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .ok()?;
            Some(stream)
        })
        .collect();
    assert_eq!(attackers.len(), ATTACKERS);
    for attempt in 0..5 {
        let started = Instant::now();
        let mut client = pki.connect(running.addr).unwrap();
        assert_pong(&client.roundtrip(&Request::signed(fixtures::PING)).unwrap());
        assert!(
            started.elapsed() < FRESH_DEADLINE,
            "fresh TLS PING {attempt} took {:?}",
            started.elapsed()
        );
    }
    let stats = slots.stats();
    assert!(stats.open <= CAP, "{stats:?}");
    assert!(
        stats.evictions > 0,
        "no stalled handshake was evicted: {stats:?}"
    );
    drop(attackers);
    running.stop().unwrap();
}
