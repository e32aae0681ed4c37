//! `yuyo register` and `yuyo commands` as real processes against the mock Discord on
//! 127.0.0.1, which validates URLs as Discord does; the endpoints are served by the test.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use yuyo_blocking::rest::rustls;
use yuyo_conformance::mock_discord::{MockDiscord, Reply, Validation};
use yuyo_demo as demo;

/// The mock Discord validating with the demo key (what `yuyo serve` is configured with).
fn validating_discord(validation: Validation) -> (MockDiscord, String) {
    let mock = MockDiscord::new().with_validation(validation);
    let rest = mock.start().expect("mock Discord");
    (mock, rest)
}

fn register(url: &str, rest: &str) -> (bool, String) {
    let output = yuyo(&["register", url, "--token", "tok", "--rest-url", rest]);
    (output.status.success(), text(&output))
}

#[test]
fn register_saves_an_endpoint_discord_can_verify() {
    let (mock, rest) = validating_discord(Validation::new(demo::DEMO_SECRET_SEED));
    let (_server, addr) = serve("blocking");
    let url = format!("http://{addr}/");
    let (ok, shown) = register(&url, &rest);
    assert!(ok, "{shown}");
    assert!(
        shown.contains(&format!(
            "OK: Discord verified the URL; application mock (1) now sends interactions to {url}"
        )),
        "{shown}"
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("PATCH", "/api/v10/applications/@me")
    );
    assert_eq!(requests[0].header("authorization"), Some("Bot tok"));
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "interactions_endpoint_url": url })
    );
    assert!(mock.validation_failures().is_empty());
}

#[test]
fn register_fails_for_an_endpoint_accepting_bad_signatures() {
    let (mock, rest) = validating_discord(Validation::new(demo::DEMO_SECRET_SEED));
    let url = format!("http://{}/", accept_everything());
    let (ok, shown) = register(&url, &rest);
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("Discord answered 400, code 50035: Invalid Form Body"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "Discord could not verify the URL {url}: The specified interactions endpoint url \
             could not be verified. (APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID)"
        )),
        "{shown}"
    );
    assert!(shown.contains(&format!("yuyo check {url}")), "{shown}");
    let failures = mock.validation_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].ends_with("the PING with a bad signature got 200; expected 401"),
        "{failures:?}"
    );
}

#[test]
fn register_fails_for_a_slow_endpoint() {
    let validation = Validation::new(demo::DEMO_SECRET_SEED).deadline(Duration::from_millis(300));
    let (mock, rest) = validating_discord(validation);
    let slow = fake_endpoint(
        Duration::from_millis(800),
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\n{\"type\":1}",
    );
    let (ok, shown) = register(&format!("http://{slow}/"), &rest);
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("Discord could not verify the URL"),
        "{shown}"
    );
    let failures = mock.validation_failures();
    assert!(
        failures[0].ends_with("no answer within 300ms"),
        "{failures:?}"
    );
}

#[test]
fn register_over_https_needs_a_certificate_discord_trusts() {
    let ca = test_ca(false);
    let (_server, backend) = serve("blocking");
    let endpoint = tls_proxy(ca.server.clone(), backend);
    let url = format!("https://localhost:{}/", endpoint.port());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let (_, rest) = validating_discord(Validation::new(demo::DEMO_SECRET_SEED).trusting(roots));
    let (ok, shown) = register(&url, &rest);
    assert!(ok, "{shown}");

    // Another CA: the handshake fails, so does the validation.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(test_ca(false).ca_der).unwrap();
    let (mock, rest) = validating_discord(Validation::new(demo::DEMO_SECRET_SEED).trusting(roots));
    let (ok, shown) = register(&url, &rest);
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("Discord could not verify the URL"),
        "{shown}"
    );
    let failures = mock.validation_failures();
    assert!(
        failures[0].contains("invalid peer certificate"),
        "{failures:?}"
    );
}

#[test]
fn register_sets_an_event_webhooks_url_too() {
    let (mock, rest) = validating_discord(Validation::new(demo::DEMO_SECRET_SEED));
    let (_server, addr) = serve("blocking");
    let url = format!("http://{addr}/");
    let events = format!("http://{}/events", events_endpoint());
    let output = yuyo(&[
        "register",
        &url,
        "--events-url",
        &events,
        "--event-type",
        "APPLICATION_AUTHORIZED",
        "--token",
        "tok",
        "--rest-url",
        &rest,
    ]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("OK: event webhooks (enabled) go to {events}")),
        "{shown}"
    );
    let body: serde_json::Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "interactions_endpoint_url": url,
            "event_webhooks_url": events,
            "event_webhooks_status": 2,
            "event_webhooks_types": ["APPLICATION_AUTHORIZED"],
        })
    );

    // The interactions endpoint as the events URL: it answers the event PING 501.
    let output = yuyo(&[
        "register",
        &url,
        "--events-url",
        &url,
        "--token",
        "tok",
        "--rest-url",
        &rest,
    ]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "Discord could not verify the URL {url}: The specified event webhooks url could \
             not be verified. (APPLICATION_EVENT_WEBHOOKS_URL_INVALID)"
        )),
        "{shown}"
    );
    assert!(
        mock.validation_failures()[0].contains("the signed PING got 501"),
        "{:?}",
        mock.validation_failures()
    );
}

#[test]
fn register_explains_a_refused_token() {
    let mock = MockDiscord::new();
    let rest = mock.start().unwrap();
    mock.push(Reply::status(
        401,
        r#"{"message": "401: Unauthorized", "code": 0}"#,
    ));
    let (ok, shown) = register("https://bot.example/", &rest);
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("Discord refused the token (401 Unauthorized)"),
        "{shown}"
    );
}

const COMMANDS: &str = r#"[
  {"name": "ping", "description": "Is the bot alive?"},
  {"name": "echo", "description": "Say it back", "options": [
    {"type": 3, "name": "text", "description": "What to say", "required": true}]},
  {"name": "Report", "type": 3}
]"#;

/// A file in a fresh temporary directory.
fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "yuyo-cli-{}-{}",
        std::process::id(),
        name.replace('.', "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `commands` as Discord stores them: ids, the application, a version, defaults.
fn stored(commands: &[u8]) -> String {
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(commands).unwrap();
    for (i, command) in list.iter_mut().enumerate() {
        let object = command.as_object_mut().unwrap();
        object.insert("id".into(), format!("{}", 500 + i).into());
        object.insert("application_id".into(), "42".into());
        object.insert("version".into(), "7".into());
        object.insert("contexts".into(), serde_json::json!([0, 1, 2]));
        object.insert("integration_types".into(), serde_json::json!([0]));
        object.insert("nsfw".into(), false.into());
        object.insert("default_member_permissions".into(), serde_json::Value::Null);
    }
    serde_json::Value::Array(list).to_string()
}

#[test]
fn commands_sync_sets_then_skips() {
    let file = temp_file("commands.json", COMMANDS);
    let file = file.to_str().unwrap();
    let mock = MockDiscord::new();
    let rest = mock.start().unwrap();
    let sync = || {
        let output = yuyo(&[
            "commands",
            "sync",
            file,
            "--guild",
            "77",
            "--token",
            "tok",
            "--rest-url",
            &rest,
        ]);
        (output.status.success(), text(&output))
    };
    mock.push(Reply::ok(r#"{"id": "42", "name": "app"}"#));
    mock.push(Reply::ok(&stored(
        br#"[{"type": 1, "name": "old", "description": "gone"}]"#,
    )));
    mock.push(Reply::ok(&stored(
        br#"[{"type": 1, "name": "ping", "description": "Is the bot alive?"},
             {"type": 1, "name": "echo", "description": "Say it back"},
             {"type": 3, "name": "Report", "description": ""}]"#,
    )));
    let (ok, shown) = sync();
    assert!(ok, "{shown}");
    assert!(shown.contains("3 commands, valid"), "{shown}");
    for line in [
        "+ ping",
        "+ echo",
        "+ Report",
        "- old",
        "synced: 3 guild 77 commands now deployed",
    ] {
        assert!(shown.contains(line), "{line}: {shown}");
    }
    let requests = mock.requests();
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/api/v10/applications/@me"),
            (
                "GET",
                "/api/v10/applications/42/guilds/77/commands?with_localizations=true"
            ),
            ("PUT", "/api/v10/applications/42/guilds/77/commands"),
        ]
    );
    let sent: Vec<serde_json::Value> = serde_json::from_slice(&requests[2].body).unwrap();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1]["options"][0]["name"], "text");

    // Discord now has them: the second run sends nothing.
    mock.push(Reply::ok(r#"{"id": "42", "name": "app"}"#));
    mock.push(Reply::ok(&stored(&requests[2].body)));
    let (ok, shown) = sync();
    assert!(ok, "{shown}");
    assert!(
        shown.contains("up to date: Discord's guild 77 commands are already these; nothing sent"),
        "{shown}"
    );
    assert_eq!(mock.requests().len(), 5);
}

#[test]
fn commands_sync_rejects_an_invalid_file_before_calling_discord() {
    let file = temp_file(
        "bad.json",
        r#"[{"name": "echo", "description": "Echo"}, {"name": "ping"},
            {"name": "Big", "description": "x"}]"#,
    );
    let mock = MockDiscord::new();
    let rest = mock.start().unwrap();
    let output = yuyo(&[
        "commands",
        "sync",
        file.to_str().unwrap(),
        "--token",
        "tok",
        "--rest-url",
        &rest,
    ]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let name = file.display();
    assert!(
        shown.contains(&format!(
            "{name}: command 2 (`ping`): description is missing"
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "{name}: command 3 (`Big`): name \"Big\" has upper-case letters"
        )),
        "{shown}"
    );
    assert!(shown.contains("nothing was sent to Discord"), "{shown}");
    assert!(mock.requests().is_empty());
}

#[test]
fn commands_list_prints_names() {
    let mock = MockDiscord::new();
    let rest = mock.start().unwrap();
    mock.push(Reply::ok(r#"{"id": "42", "name": "app"}"#));
    mock.push(Reply::ok(&stored(
        br#"[{"type": 1, "name": "ping", "description": "Is the bot alive?"},
             {"type": 1, "name": "echo", "description": "Say it back"},
             {"type": 3, "name": "Report", "description": ""}]"#,
    )));
    let output = yuyo(&["commands", "list", "--token", "tok", "--rest-url", &rest]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("3 global commands"), "{shown}");
    assert!(
        shown.contains("/ping  Is the bot alive?  (id 500)"),
        "{shown}"
    );
    assert!(shown.contains("message: Report"), "{shown}");
    assert_eq!(mock.requests()[1].path, "/api/v10/applications/42/commands");
}
