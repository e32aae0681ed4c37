//! What the `yuyo` binary's tests share: running it, serving endpoints on 127.0.0.1.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use yuyo_blocking::rest::rustls;

pub const YUYO: &str = env!("CARGO_BIN_EXE_yuyo");
/// Bound on any one process step (start-up, a check, a graceful exit).
pub const BOUND: Duration = Duration::from_secs(20);

/// A spawned process, killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits for the process to exit, at most `BOUND`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {BOUND:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `yuyo serve --bind 127.0.0.1:0 --runtime RUNTIME`; returns the guard and the address
/// from its first stdout line.
pub fn serve(runtime: &str) -> (Guard, SocketAddr) {
    serve_with(runtime, &[])
}

/// `yuyo serve --bind 127.0.0.1:0 --runtime RUNTIME EXTRA…`, as [`serve`] (http or https).
pub fn serve_with(runtime: &str, extra: &[&str]) -> (Guard, SocketAddr) {
    let (guard, addr, _lines) = serve_lines(runtime, extra);
    (guard, addr)
}

/// Spawns `command` (a `yuyo serve`) and waits (bounded) for its first stdout line:
/// the guard, the address it listens on and the next lines, each one as it is printed.
pub fn start_serving(mut command: Command) -> (Guard, SocketAddr, mpsc::Receiver<String>) {
    let child = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn yuyo serve");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // Drains stdout to its end, so the server never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{command:?} printed nothing within {BOUND:?}"));
    let addr = first
        .strip_prefix("listening on http://")
        .or_else(|| first.strip_prefix("listening on https://"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("a socket address");
    (guard, addr, rx)
}

/// Runs `yuyo ARGS` to completion (bounded) and returns its output.
pub fn yuyo(args: &[&str]) -> Output {
    let mut child = Command::new(YUYO)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn yuyo");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let mut guard = Guard(child);
    let status = guard.wait();
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An endpoint that skips signature checks: every request gets 200 `{"type":1}`.
pub fn accept_everything() -> SocketAddr {
    fake_endpoint(
        Duration::ZERO,
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\
          connection: close\r\n\r\n{\"type\":1}",
    )
}

/// An endpoint answering every request with `response` after `delay` (a slow endpoint:
/// the delay is the behaviour under test), one connection at a time.
pub fn fake_endpoint(delay: Duration, response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            answer(stream, delay, response);
        }
    });
    addr
}

/// Reads a request head and its Content-Length body, then answers and closes.
pub fn answer<S: Read + Write>(mut stream: S, delay: Duration, response: &[u8]) {
    if read_request(&mut stream).is_some() {
        thread::sleep(delay);
        let _ = stream.write_all(response);
        let _ = stream.flush();
    }
}

/// A request head (lowercased) and its Content-Length body.
pub fn read_request<S: Read>(stream: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = buf[end + 4..end + 4 + length].to_vec();
                return Some((head, body));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An endpoint answering each request with what `handler` makes of its head
/// (lowercased) and body.
pub fn endpoint_with(handler: impl Fn(&str, &[u8]) -> Vec<u8> + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            if let Some((head, body)) = read_request(&mut stream) {
                let _ = stream.write_all(&handler(&head, &body));
            }
        }
    });
    addr
}

/// A test CA and a server certificate it issued for `localhost` and 127.0.0.1.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    /// A server configuration presenting the leaf certificate.
    pub server: Arc<rustls::ServerConfig>,
}

/// A new CA and leaf; `expired`: the leaf's validity ended in 2020.
pub fn test_ca(expired: bool) -> TestCa {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "yuyo test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "yuyo test endpoint");
    if expired {
        leaf_params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        leaf_params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let server = Arc::new(
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
    TestCa {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server,
    }
}

/// A TLS terminator on 127.0.0.1 relaying each connection to `backend` (plain http).
pub fn tls_proxy(server: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let server = Arc::clone(&server);
            thread::spawn(move || relay(server, tcp, backend));
        }
    });
    addr
}

/// Decrypts one request from `tcp`, sends it to `backend`, encrypts the answer back.
fn relay(server: Arc<rustls::ServerConfig>, tcp: TcpStream, backend: SocketAddr) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = rustls::ServerConnection::new(server) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let Ok(mut upstream) = TcpStream::connect(backend) else {
        return;
    };
    let _ = upstream.set_read_timeout(Some(Duration::from_secs(5)));
    // Requests end with their Content-Length body; `connection: close` answers end at EOF.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if upstream.write_all(&buf).is_err() {
        return;
    }
    loop {
        match upstream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tls.write_all(&chunk[..n]).is_err() {
                    return;
                }
            }
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// An event webhooks endpoint verifying the demo key: 204 when signed, 401 otherwise.
pub fn events_endpoint() -> SocketAddr {
    let verifier =
        yuyo_core::endpoint::Verifier::from_hex(yuyo_demo::DEMO_PUBLIC_KEY_HEX).expect("demo key");
    endpoint_with(move |head, body| {
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let signature = header("x-signature-ed25519:")
            .and_then(|s| hex::decode(s).ok())
            .and_then(|s| <[u8; 64]>::try_from(s).ok());
        let timestamp = header("x-signature-timestamp:").unwrap_or_default();
        let valid = head.starts_with("post ")
            && signature.is_some_and(|s| verifier.verify(timestamp.as_bytes(), body, &s).is_ok());
        if valid {
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
        }
    })
}

/// `yuyo serve --bind 127.0.0.1:0 --runtime RUNTIME EXTRA…`: the guard, the address of
/// the first stdout line and the next lines, each one as it is printed.
pub fn serve_lines(runtime: &str, extra: &[&str]) -> (Guard, SocketAddr, mpsc::Receiver<String>) {
    let mut command = Command::new(YUYO);
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--runtime", runtime])
        .args(extra);
    start_serving(command)
}
