//! The `yuyo` binary as real processes on 127.0.0.1: `check` against `serve` on every
//! runtime, `check` against an endpoint that accepts bad signatures, `sign`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use yuyo_demo as demo;

/// `yuyo check` passes against `yuyo serve --runtime RUNTIME`, which then exits
/// gracefully (status 0) on SIGTERM.
fn check_passes_against(runtime: &str) {
    let (mut server, addr) = serve(runtime);
    let url = format!("http://{addr}/");
    let output = yuyo(&["check", &url, "--secret-key", DEMO_SEED_HEX]);
    let shown = text(&output);
    assert!(
        output.status.success(),
        "check failed against {runtime}:\n{shown}"
    );
    assert_eq!(shown.matches("PASS").count(), 5, "{shown}");
    assert!(!shown.contains("FAIL"), "{shown}");
    assert!(
        shown.contains("all 5 probes passed: Discord would accept this URL"),
        "{shown}"
    );

    #[cfg(unix)]
    {
        let killed = Command::new("kill")
            .args(["-TERM", &server.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = server.wait();
        assert!(
            status.success(),
            "serve --runtime {runtime} exited with {status} on SIGTERM"
        );
    }
    #[cfg(not(unix))]
    drop(server);
}

#[test]
fn check_passes_against_serve_smol() {
    check_passes_against("smol");
}

#[test]
fn check_passes_against_serve_tokio() {
    check_passes_against("tokio");
}

#[test]
fn check_passes_against_serve_blocking() {
    check_passes_against("blocking");
}

#[test]
fn check_passes_against_serve_tower() {
    check_passes_against("tower");
}

/// The demo key's seed as `--secret-key` takes it.
const DEMO_SEED_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

#[test]
fn check_without_a_key_passes_a_correct_endpoint_and_says_what_it_did_not_check() {
    let (_server, addr) = serve("blocking");
    let output = yuyo(&["check", &format!("http://{addr}/")]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains(
            "SKIP  signed PING answered 200 {\"type\":1}: not checked: needs the key Discord \
             signs with"
        ),
        "{shown}"
    );
    assert!(shown.contains("use `yuyo register`"), "{shown}");
    for probe in [
        "PASS  PING without signature headers answered 401  (",
        "PASS  PING with a corrupted signature answered 401  (",
        "PASS  PING sent as text/plain answered 4xx  (",
        "PASS  GET answered with no 2xx  (",
    ] {
        assert!(shown.contains(probe), "{probe}: {shown}");
    }
    assert!(shown.contains(" ms)"), "latencies are printed: {shown}");
    assert!(
        shown.contains("all 4 probes passed (1 not checked): Discord would accept this URL"),
        "{shown}"
    );
}

#[test]
fn check_fails_against_an_endpoint_accepting_bad_signatures() {
    let addr = accept_everything();
    let output = yuyo(&["check", &format!("http://{addr}/")]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "FAIL  PING with a corrupted signature answered 401: got 200 {\"type\":1}: the \
             endpoint accepts requests with a bad signature, which anyone can send"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("FAIL  PING without signature headers answered 401: got 200"),
        "{shown}"
    );
    assert!(
        shown.contains("FAIL  GET answered with no 2xx: got 200"),
        "{shown}"
    );
}

#[test]
fn check_names_a_wrong_refusal_status() {
    let addr = fake_endpoint(
        Duration::ZERO,
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad",
    );
    let output = yuyo(&["check", &format!("http://{addr}/")]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "FAIL  PING with a corrupted signature answered 401: got 400 bad: Discord expects \
             401 for a bad signature: the endpoint refuses the request but with the wrong status"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("PASS  PING sent as text/plain answered 4xx"),
        "{shown}"
    );
}

#[test]
fn check_enforces_the_deadline_on_every_probe() {
    let slow = fake_endpoint(
        Duration::from_millis(700),
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let output = yuyo(&["check", &format!("http://{slow}/"), "--deadline-ms", "200"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "FAIL  PING without signature headers answered 401: bad or no response: no \
             complete response within 200ms: Discord gives up after 200ms"
        ),
        "{shown}"
    );
    assert_eq!(
        shown.matches("no complete response within 200ms").count(),
        4,
        "{shown}"
    );
}

#[test]
fn check_fails_when_nothing_listens() {
    // Bind then drop: the port is (almost certainly) closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let output = yuyo(&["check", &format!("http://{addr}/")]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert_eq!(shown.matches("FAIL").count(), 4, "{shown}");
    assert!(shown.contains("cannot connect"), "{shown}");
}

#[test]
fn check_refuses_a_ca_file_without_certificates() {
    let dir = std::env::temp_dir().join(format!("yuyo-cli-badca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("ca.pem");
    std::fs::write(&path, "not a certificate\n").expect("write");
    let path = path.to_str().expect("utf-8 path");
    let output = yuyo(&["check", "https://localhost:9/", "--ca", path]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(&format!("--ca {path}: no certificate in it")),
        "{shown}"
    );
    let output = yuyo(&["check", "http://localhost:9/", "--ca", path]);
    assert!(text(&output).contains("--ca is for https:// URLs"));
}

/// `yuyo check` of https://localhost:PORT/ where a TLS proxy with `ca`'s certificate
/// fronts `yuyo serve`.
fn check_https(ca: &TestCa, extra: &[&str]) -> (Output, String) {
    let (server, backend) = serve("blocking");
    let endpoint = tls_proxy(ca.server.clone(), backend);
    let url = format!("https://localhost:{}/", endpoint.port());
    let mut args = vec!["check", url.as_str()];
    args.extend_from_slice(extra);
    let output = yuyo(&args);
    drop(server);
    let shown = text(&output);
    (output, shown)
}

/// A PEM file holding `ca`'s certificate.
fn ca_file(ca: &TestCa, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("yuyo-cli-ca-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("ca.pem");
    std::fs::write(&path, &ca.ca_pem).expect("write CA");
    path
}

#[test]
fn check_https_with_a_private_ca_reports_the_certificate() {
    let ca = test_ca(false);
    let pem = ca_file(&ca, "good");
    let pem = pem.to_str().expect("utf-8 path");
    let (output, shown) = check_https(&ca, &["--ca", pem, "--secret-key", DEMO_SEED_HEX]);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains(
            "PASS  TLS certificate: subject CN=yuyo test endpoint, issuer CN=yuyo test CA, \
             expires "
        ),
        "{shown}"
    );
    assert!(shown.contains("all 6 probes passed"), "{shown}");
}

#[test]
fn check_https_fails_on_an_untrusted_certificate() {
    let ca = test_ca(false);
    let (output, shown) = check_https(&ca, &[]);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "FAIL  TLS certificate: the certificate is not trusted: it does not chain to a \
             public CA"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("[subject CN=yuyo test endpoint, issuer CN=yuyo test CA"),
        "{shown}"
    );
    assert!(
        shown.contains("the probes need a certificate Discord accepts: not run"),
        "{shown}"
    );
}

#[test]
fn check_https_fails_on_an_expired_certificate() {
    let ca = test_ca(true);
    let pem = ca_file(&ca, "expired");
    let (output, shown) = check_https(&ca, &["--ca", pem.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("FAIL  TLS certificate: the certificate expired on Jan  1 00:00:00 2020"),
        "{shown}"
    );
}

#[test]
fn check_events_expects_204_for_a_signed_ping() {
    let addr = events_endpoint();
    let url = format!("http://{addr}/events");
    let output = yuyo(&["check", &url, "--events", "--secret-key", DEMO_SEED_HEX]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("PASS  signed event PING answered 204"),
        "{shown}"
    );
    assert!(shown.contains("all 4 probes passed"), "{shown}");

    // An interactions endpoint is not an events one: it refuses type 0.
    let (_server, addr) = serve("blocking");
    let url = format!("http://{addr}/");
    let output = yuyo(&["check", &url, "--events", "--secret-key", DEMO_SEED_HEX]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "FAIL  signed event PING answered 204: got 501 Unsupported interaction type 0"
        ),
        "{shown}"
    );
}

#[test]
fn check_rejects_a_public_key_that_does_not_match() {
    let other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let output = yuyo(&["check", "http://127.0.0.1:9/", "--public-key", other]);
    let shown = text(&output);
    assert!(!output.status.success());
    assert!(shown.contains("give the matching --secret-key"), "{shown}");

    let seed = "09".repeat(32);
    let output = yuyo(&[
        "check",
        "http://127.0.0.1:9/",
        "--secret-key",
        &seed,
        "--public-key",
        other,
    ]);
    let shown = text(&output);
    assert!(!output.status.success());
    assert!(shown.contains("does not belong to --secret-key"), "{shown}");
}

#[test]
fn sign_prints_headers_and_curl() {
    let body = r#"{"type":1}"#;
    let output = yuyo(&["sign", "--timestamp", "1700000000", "--body", body]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    let signature = demo::sign(&demo::DEMO_SECRET_SEED, "1700000000", body.as_bytes());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("X-Signature-Ed25519: {signature}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("X-Signature-Timestamp: 1700000000\n"),
        "{stdout}"
    );
    assert!(stdout.contains("curl -i "), "{stdout}");
    assert!(stdout.contains(r#"--data-binary '{"type":1}'"#), "{stdout}");
}

#[test]
fn sign_reads_a_file_with_another_key() {
    let dir = std::env::temp_dir().join(format!("yuyo-cli-sign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("body.json");
    std::fs::write(&path, br#"{"type":2}"#).expect("write body");
    let seed = [9u8; 32];
    let output = yuyo(&[
        "sign",
        "--secret-key",
        &"09".repeat(32),
        "--timestamp",
        "42",
        "--file",
        path.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    let signature = demo::sign(&seed, "42", br#"{"type":2}"#);
    assert!(stdout.contains(&signature), "{stdout}");
    assert!(stdout.contains("--data-binary '@"), "{stdout}");
}

#[test]
fn serve_with_a_public_key_checks_with_its_secret_key() {
    let seed = [9u8; 32];
    let public_key = demo::public_key_hex(&seed);
    let child = Command::new(YUYO)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--public-key",
            &public_key,
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn yuyo serve");
    let mut server = Guard(child);
    let stdout = server.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(3)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(BOUND).expect("serve printed its address");
    let addr = lines[0]
        .strip_prefix("listening on ")
        .expect("address line");
    assert!(
        lines.contains(&format!("public key: {public_key}")),
        "{lines:?}"
    );
    let url = format!("{addr}/");

    let output = yuyo(&["check", &url, "--secret-key", &"09".repeat(32)]);
    assert!(output.status.success(), "{}", text(&output));

    // Without a key, the signed PING is not checked; the rest passes.
    let output = yuyo(&["check", &url]);
    assert!(output.status.success(), "{}", text(&output));

    // Signed with the demo key instead: the endpoint rightly refuses the PING.
    let output = yuyo(&["check", &url, "--secret-key", DEMO_SEED_HEX]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("FAIL  signed PING answered 200 {\"type\":1}: got 401"),
        "{shown}"
    );
    assert!(
        shown.contains("PASS  PING with a corrupted signature"),
        "{shown}"
    );
}

#[test]
fn serve_refuses_the_demo_key_on_a_public_address() {
    // Refused before binding: nothing listens on 0.0.0.0.
    let output = yuyo(&["serve", "--bind", "0.0.0.0:0"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("refusing to serve on 0.0.0.0:0 with the built-in demo key"),
        "{shown}"
    );
    assert!(
        shown.contains("--public-key") && shown.contains("--insecure-demo-key"),
        "{shown}"
    );
}

#[test]
fn serve_answers_webhook_events_at_its_events_path() {
    let (_server, addr) = serve("smol");
    let url = format!("http://{addr}/events");
    let output = yuyo(&["check", &url, "--events", "--secret-key", DEMO_SEED_HEX]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(!shown.contains("FAIL"), "{shown}");
}

/// A CA (PEM) and a leaf for 127.0.0.1 it signed, written as `cert.pem`/`key.pem` in `dir`.
#[cfg(unix)]
fn write_leaf(dir: &std::path::Path, name: &str) -> String {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let ca_path = dir.join(format!("{name}.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    ca_path.to_str().unwrap().to_owned()
}

#[cfg(unix)]
#[test]
fn serve_over_https_passes_check_and_reloads_its_certificate_on_sighup() {
    let dir = std::env::temp_dir().join(format!("yuyo-serve-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first_ca = write_leaf(&dir, "first-ca");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let (server, addr) = serve_with(
        "smol",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://{addr}/");
    let check = |ca: &str| yuyo(&["check", &url, "--ca", ca, "--secret-key", DEMO_SEED_HEX]);
    let output = check(&first_ca);
    assert!(output.status.success(), "{}", text(&output));
    // A renewed certificate (another CA), then SIGHUP: new connections get it.
    let second_ca = write_leaf(&dir, "second-ca");
    let hup = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + BOUND;
    let reloaded = loop {
        // The reload is asynchronous to the signal: poll (bounded) until it shows.
        let output = check(&second_ca);
        if output.status.success() || std::time::Instant::now() > deadline {
            break output;
        }
    };
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert!(
        !check(&first_ca).status.success(),
        "the old certificate is gone"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_tls_on_tower() {
    let output = yuyo(&[
        "serve",
        "--runtime",
        "tower",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
    ]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("yuyo-tower serves under its host's TLS"),
        "{shown}"
    );
}

#[test]
fn check_fails_an_endpoint_answering_in_3_5_seconds() {
    // The first probe's answer comes after 3.5 s (the slow peer is the behaviour under
    // test); the others at once: Discord's own 3-second deadline fails just that one.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let unauthorized: &[u8] =
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let delay = if n == 0 {
                Duration::from_millis(3_500)
            } else {
                Duration::ZERO
            };
            thread::spawn(move || answer(stream, delay, unauthorized));
        }
    });
    let output = yuyo(&["check", &format!("http://{addr}/")]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert_eq!(shown.matches("FAIL").count(), 1, "{shown}");
    assert!(shown.contains("Discord gives up after 3s"), "{shown}");
    assert_eq!(shown.matches("PASS").count(), 3, "{shown}");
}

#[test]
fn check_https_names_a_self_signed_certificate() {
    // What `openssl req -x509` makes: a CA certificate serving as its own leaf.
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let addr = tls_proxy(std::sync::Arc::new(server), accept_everything());
    let output = yuyo(&["check", &format!("https://{addr}/")]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("FAIL  TLS certificate: the certificate is self-signed"),
        "{shown}"
    );
}
