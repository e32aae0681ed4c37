//! The `yuyo` binary as real processes on 127.0.0.1: `check` against `serve` on every
//! runtime, `check` against an endpoint that accepts bad signatures, `sign`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::*;
use yuyo_demo as demo;

/// `yuyo check` passes against `yuyo serve --runtime RUNTIME`, which then exits
/// gracefully (status 0) on SIGTERM.
fn check_passes_against(runtime: &str) {
    let (mut server, addr) = serve(runtime);
    let url = format!("http://{addr}/");
    let output = yuyo(&["check", &url]);
    let shown = text(&output);
    assert!(
        output.status.success(),
        "check failed against {runtime}:\n{shown}"
    );
    assert_eq!(shown.matches("PASS").count(), 2, "{shown}");
    assert!(!shown.contains("FAIL"), "{shown}");

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

#[test]
fn check_fails_against_an_endpoint_accepting_bad_signatures() {
    let addr = accept_everything();
    let output = yuyo(&["check", &format!("http://{addr}/")]);
    let shown = text(&output);
    assert!(!output.status.success(), "check passed:\n{shown}");
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("PASS  signed PING"), "{shown}");
    assert!(
        shown.contains("FAIL  PING with a corrupted signature answered 401: got 200"),
        "{shown}"
    );
    assert!(
        shown.contains("accepts requests Discord did not sign"),
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
    assert_eq!(shown.matches("FAIL").count(), 2, "{shown}");
    assert!(shown.contains("cannot connect"), "{shown}");
}

#[test]
fn check_refuses_https_clearly() {
    let output = yuyo(&["check", "https://example.com/interactions"]);
    let shown = text(&output);
    assert!(!output.status.success());
    assert!(shown.contains("https:// URLs are not supported"), "{shown}");
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

    // Signed with the demo key instead: the endpoint rightly refuses the PING.
    let output = yuyo(&["check", &url]);
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
