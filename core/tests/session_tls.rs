//! The TLS layer of `server::Session`: an in-memory rustls client against the session's
//! byte buffers, on the fake-clock driver (`common::driver`).
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use common::driver::{Driver, request};
use common::fixture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use yuyo_core::http1;
use yuyo_core::server::tls::{ServerTls, TlsError};
use yuyo_core::server::{Input, Session};

struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Self { ca }
    }

    fn cert(&self, serial: u64) -> Cert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.serial_number = Some(serial.into());
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Cert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(&self) -> rustls::ClientConnection {
        self.client_with(rustls::DEFAULT_VERSIONS)
    }

    fn client_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConnection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        rustls::ClientConnection::new(Arc::new(config), name).unwrap()
    }
}

fn server_tls(cert: &Cert) -> ServerTls {
    ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap()
}

/// A session serving TLS and a client on its bytes.
struct Tls {
    d: Driver,
    client: rustls::ClientConnection,
    /// `d.out` bytes already given to the client.
    seen: usize,
    /// Plaintext the client received.
    plain: Vec<u8>,
}

impl Tls {
    fn new(tls: &ServerTls, client: rustls::ClientConnection, config: http1::Config) -> Self {
        let mut d = Driver::with_config(common::endpoint(), config.clone());
        d.session = Session::new(common::endpoint(), config, d.now).with_tls(Some(tls));
        Self {
            d,
            client,
            seen: 0,
            plain: Vec::new(),
        }
    }

    /// Moves bytes both ways until neither side has anything more for the other.
    fn pump(&mut self) -> Result<(), rustls::Error> {
        loop {
            let mut to_server = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut to_server).unwrap();
            }
            let to_client = self.d.out.len() > self.seen;
            if to_server.is_empty() && !to_client {
                return Ok(());
            }
            if !to_server.is_empty() {
                self.d.receive(&to_server);
            }
            if to_client {
                let mut bytes = &self.d.out[self.seen..];
                self.seen = self.d.out.len();
                while !bytes.is_empty() {
                    self.client.read_tls(&mut bytes).unwrap();
                    self.client.process_new_packets()?;
                }
                let mut chunk = [0_u8; 4096];
                loop {
                    match self.client.reader().read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
    }

    fn send(&mut self, plain: &[u8]) {
        self.client.writer().write_all(plain).unwrap();
        self.pump().unwrap();
    }

    /// The (status, body) of every response received, `Content-Length` framed.
    fn responses(&self) -> Vec<(u16, Vec<u8>)> {
        let mut rest = &self.plain[..];
        let mut all = Vec::new();
        while !rest.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = resp.parse(rest).unwrap() else {
                panic!("partial response")
            };
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
            all.push((resp.code.unwrap(), rest[n..n + len].to_vec()));
            rest = &rest[n + len..];
        }
        all
    }
}

#[test]
fn handshake_then_ping_with_alpn_http11() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let mut t = Tls::new(&tls, pki.client(), http1::Config::default());
    t.pump().unwrap();
    assert!(!t.client.is_handshaking());
    assert_eq!(t.client.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(t.d.session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(t.d.session.is_tls());
    t.send(&request(&fixture("ping")));
    assert_eq!(t.responses(), [(200, br#"{"type":1}"#.to_vec())]);
    // Ciphertext on the wire, not the response.
    assert!(!t.d.out.windows(8).any(|w| w == b"HTTP/1.1"));
}

#[test]
fn both_tls_versions_are_served() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut t = Tls::new(&tls, pki.client_with(&[version]), http1::Config::default());
        t.send(&request(&fixture("ping")));
        assert_eq!(t.client.protocol_version(), Some(expected));
        assert_eq!(t.client.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(t.responses(), [(200, br#"{"type":1}"#.to_vec())]);
    }
}

#[test]
fn keep_alive_and_pipelined_requests_over_tls() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let mut t = Tls::new(&tls, pki.client(), http1::Config::default());
    t.send(&request(&fixture("ping")));
    let mut pipelined = request(&fixture("command_echo"));
    pipelined.extend(request(&fixture("command_none")));
    t.send(&pipelined);
    let statuses: Vec<u16> = t.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [200, 200, 204]);
    assert!(!t.d.closed && !t.d.shut_down_write);
}

#[test]
fn a_stalled_handshake_is_cut_at_the_head_deadline() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let config = http1::Config {
        head_timeout: Duration::from_secs(3),
        ..http1::Config::default()
    };
    let mut t = Tls::new(&tls, pki.client(), config);
    let mut hello = Vec::new();
    t.client.write_tls(&mut hello).unwrap();
    // Half the ClientHello, then nothing.
    let wait = t.d.receive(&hello[..hello.len() / 2]);
    assert!(wait.read);
    assert_eq!(
        wait.deadline,
        Some(t.d.now.instant + Duration::from_secs(3))
    );
    t.d.advance(Duration::from_secs(2));
    assert!(!t.d.closed);
    t.d.advance(Duration::from_secs(1));
    assert!(t.d.closed, "the handshake outlived the head deadline");
    // Closed at once: no 408 (there is no TLS to send it over), nothing at all.
    assert!(t.d.out.is_empty());
}

#[test]
fn a_slow_head_after_the_handshake_is_answered_408_over_tls() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let config = http1::Config {
        head_timeout: Duration::from_secs(3),
        ..http1::Config::default()
    };
    let mut t = Tls::new(&tls, pki.client(), config);
    t.pump().unwrap();
    t.send(b"POST / HTTP/1.1\r\nHost: x\r\n");
    t.d.advance(Duration::from_secs(3));
    t.pump().unwrap();
    assert_eq!(t.responses()[0].0, 408);
    // close_notify came before the sending side was shut down.
    assert!(t.d.shut_down_write);
    let mut rest = Vec::new();
    assert_eq!(t.client.reader().read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn a_bad_record_gets_an_alert_and_a_close() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let mut t = Tls::new(&tls, pki.client(), http1::Config::default());
    t.pump().unwrap();
    let seen = t.d.out.len();
    // Application data that does not decrypt.
    t.d.receive(&[0x17, 0x03, 0x03, 0x00, 0x20, 0x55].repeat(7)[..37]);
    let sent = &t.d.out[seen..];
    assert_eq!(sent.first(), Some(&0x17), "an encrypted alert (TLS 1.3)");
    assert!(t.d.shut_down_write);
    let error = t.pump().unwrap_err();
    assert!(
        matches!(error, rustls::Error::AlertReceived(_)),
        "{error:?}"
    );
    // The lingering close discards what comes next, then closes at EOF.
    t.d.receive(b"more");
    t.d.input(Input::Eof);
    assert!(t.d.closed);
}

#[test]
fn plaintext_http_gets_a_tls_alert_never_an_http_answer() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let mut t = Tls::new(&tls, pki.client(), http1::Config::default());
    t.d.receive(&request(&fixture("ping")));
    assert_eq!(t.d.out.first(), Some(&0x15), "a plaintext alert record");
    assert!(!t.d.out.starts_with(b"HTTP"));
    assert!(t.d.shut_down_write);
}

#[test]
fn graceful_shutdown_sends_close_notify() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let mut t = Tls::new(&tls, pki.client(), http1::Config::default());
    t.send(&request(&fixture("ping")));
    t.d.input(Input::Shutdown);
    t.pump().unwrap();
    let mut rest = Vec::new();
    assert_eq!(t.client.reader().read_to_end(&mut rest).unwrap(), 0);
    assert_eq!(t.responses().len(), 1);
}

#[test]
fn peer_close_notify_is_an_end_of_stream() {
    let pki = Pki::new();
    let tls = server_tls(&pki.cert(1));
    let mut t = Tls::new(&tls, pki.client(), http1::Config::default());
    t.send(&request(&fixture("ping")));
    t.client.send_close_notify();
    t.pump().unwrap();
    assert!(t.d.closed, "closed after the peer's close_notify");
    assert!(
        !t.d.shut_down_write,
        "no lingering close: the peer sends nothing more"
    );
}

#[test]
fn reload_serves_new_sessions_and_keeps_open_ones() {
    let pki = Pki::new();
    let (first, second) = (pki.cert(1), pki.cert(2));
    let tls = server_tls(&first);
    let mut before = Tls::new(&tls, pki.client(), http1::Config::default());
    before.pump().unwrap();
    tls.reload_pem(second.cert_pem.as_bytes(), second.key_pem.as_bytes())
        .unwrap();
    let mut after = Tls::new(&tls, pki.client(), http1::Config::default());
    after.pump().unwrap();
    assert_eq!(before.client.peer_certificates().unwrap()[0], first.der);
    assert_eq!(after.client.peer_certificates().unwrap()[0], second.der);
    before.send(&request(&fixture("ping")));
    after.send(&request(&fixture("ping")));
    assert_eq!(before.responses().len(), 1);
    assert_eq!(after.responses().len(), 1);
    // A failed reload changes nothing.
    let current = tls.config();
    assert!(matches!(
        tls.reload_pem(first.cert_pem.as_bytes(), second.key_pem.as_bytes()),
        Err(TlsError::KeyMismatch)
    ));
    assert!(Arc::ptr_eq(&current, &tls.config()));
}

#[test]
fn configuration_errors_are_precise() {
    let pki = Pki::new();
    let (first, second) = (pki.cert(1), pki.cert(2));
    let missing = std::env::temp_dir().join("yuyo-no-such-dir/cert.pem");
    let error = ServerTls::from_pem_files(&missing, &missing).unwrap_err();
    assert!(
        matches!(&error, TlsError::Read { path, source } if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    let error = ServerTls::from_pem(first.key_pem.as_bytes(), first.key_pem.as_bytes());
    assert!(matches!(error, Err(TlsError::NoCertificate)), "{error:?}");
    let error = ServerTls::from_pem(first.cert_pem.as_bytes(), first.cert_pem.as_bytes());
    assert!(matches!(error, Err(TlsError::NoKey)), "{error:?}");
    let error = ServerTls::from_pem(first.cert_pem.as_bytes(), second.key_pem.as_bytes());
    assert!(matches!(error, Err(TlsError::KeyMismatch)), "{error:?}");
    let error = ServerTls::from_pem(first.cert_pem.as_bytes(), b"");
    assert!(matches!(error, Err(TlsError::NoKey)), "{error:?}");
    let error = ServerTls::from_der(
        Vec::new(),
        rustls::pki_types::PrivateKeyDer::from_pem_slice(first.key_pem.as_bytes()).unwrap(),
    );
    assert!(matches!(error, Err(TlsError::NoCertificate)), "{error:?}");
    let built_in_memory = server_tls(&first);
    assert!(matches!(
        built_in_memory.reload_from_files(),
        Err(TlsError::NoFiles)
    ));
}
