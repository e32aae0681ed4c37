//! What the endpoint lets out: the timestamp window's checks and logging, and the
//! interaction token in `Debug` output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};
use yuyo_core::deferral::Target;
use yuyo_core::endpoint::{Endpoint, Finished, Immediate, Rejection};

/// Every event logged on this thread while it is the default subscriber: level and
/// `field=value` text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

impl Capture {
    fn at(&self, level: Level) -> Vec<String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, text)| text.clone())
            .collect()
    }
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let level = *event.metadata().level();
        self.0.lock().unwrap().push((level, text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with a fresh [`Capture`] as this thread's subscriber.
fn captured(f: impl FnOnce()) -> Capture {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), f);
    capture
}

fn windowed() -> Endpoint {
    Endpoint::new(
        config().timestamp_window(Duration::from_secs(300)),
        handlers(),
    )
}

/// The echo fixture sent at `timestamp`, signed (or with a corrupted signature), as
/// the endpoint finishes it at `now`.
fn send(endpoint: &Endpoint, timestamp: u64, authentic: bool, now: u64) -> Finished {
    let body = fixture("command_echo");
    let timestamp = timestamp.to_string();
    let mut signature = sign(timestamp.as_bytes(), &body).into_bytes();
    if !authentic {
        signature[0] = if signature[0] == b'0' { b'1' } else { b'0' };
    }
    let mut headers = discord_headers(&body);
    for (name, value) in &mut headers {
        match name.as_str() {
            "X-Signature-Ed25519" => value.clone_from(&signature),
            "X-Signature-Timestamp" => *value = timestamp.clone().into_bytes(),
            _ => {}
        }
    }
    endpoint.receive(&head("POST", "/", &headers), [body], now)
}

fn rejected(finished: &Finished) -> Option<&Rejection> {
    match finished {
        Finished::Respond(Immediate::Rejected(rejection)) => Some(rejection),
        _ => None,
    }
}

#[test]
fn forged_requests_are_401_for_their_signature_whatever_the_timestamp() {
    let endpoint = windowed();
    let capture = captured(|| {
        for timestamp in [NOW, NOW - 301, NOW + 10_000, 0] {
            let finished = send(&endpoint, timestamp, false, NOW);
            assert_eq!(rejected(&finished), Some(&Rejection::InvalidSignature));
            assert_eq!(rejected(&finished).unwrap().status(), 401);
        }
    });
    // Anyone can send these: debug lines only.
    assert!(capture.at(Level::WARN).is_empty());
    assert!(capture.at(Level::ERROR).is_empty());
    assert_eq!(capture.at(Level::DEBUG).len(), 4);
}

#[test]
fn authentic_but_stale_requests_are_401_with_one_warning_a_minute() {
    let endpoint = windowed();
    let capture = captured(|| {
        for (timestamp, now) in [
            (NOW - 301, NOW),
            (NOW + 301, NOW),
            (NOW - 1_000, NOW + 59),
            (NOW - 1_000, NOW + 60),
        ] {
            let finished = send(&endpoint, timestamp, true, now);
            assert_eq!(
                rejected(&finished),
                Some(&Rejection::TimestampOutsideWindow)
            );
            assert_eq!(rejected(&finished).unwrap().status(), 401);
        }
    });
    let warnings = capture.at(Level::WARN);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for warning in &warnings {
        assert!(warning.contains("replay"), "{warning}");
        assert!(warning.contains("clock"), "{warning}");
        assert!(warning.contains("window_secs=300"), "{warning}");
    }
    assert!(warnings[0].contains("age_secs=301"), "{}", warnings[0]);
    assert!(warnings[0].contains("suppressed=0"), "{}", warnings[0]);
    assert!(warnings[1].contains("age_secs=1060"), "{}", warnings[1]);
    assert!(warnings[1].contains("suppressed=2"), "{}", warnings[1]);
    // The suppressed ones still leave a debug line.
    assert_eq!(capture.at(Level::DEBUG).len(), 2);
}

#[test]
fn batch_verification_warns_the_same_way() {
    let endpoint = windowed();
    let capture = captured(|| {
        let body = fixture("command_echo");
        let stale = (NOW - 301).to_string();
        let mut headers = discord_headers(&body);
        for (name, value) in &mut headers {
            match name.as_str() {
                "X-Signature-Ed25519" => *value = sign(stale.as_bytes(), &body).into_bytes(),
                "X-Signature-Timestamp" => *value = stale.clone().into_bytes(),
                _ => {}
            }
        }
        let head = head("POST", "/", &headers);
        let tickets: Vec<_> = (0..3)
            .map(|_| {
                let exchange = endpoint.begin(&head).unwrap();
                let signed = exchange.push(body.clone()).unwrap().end().unwrap();
                signed.enqueue(NOW)
            })
            .collect();
        for ticket in tickets {
            let finished = futures::executor::block_on(ticket);
            assert_eq!(
                rejected(&finished),
                Some(&Rejection::TimestampOutsideWindow)
            );
        }
    });
    assert_eq!(capture.at(Level::WARN).len(), 1);
}

#[test]
fn fresh_requests_pass_and_the_window_is_off_by_default() {
    let capture = captured(|| {
        let finished = send(&windowed(), NOW - 300, true, NOW);
        assert!(matches!(finished, Finished::Dispatch(_)), "{finished:?}");
        assert_eq!(
            windowed().config().get_timestamp_window(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(endpoint().config().get_timestamp_window(), None);
        let finished = send(&endpoint(), NOW - 1_000_000, true, NOW);
        assert!(matches!(finished, Finished::Dispatch(_)), "{finished:?}");
    });
    assert!(capture.at(Level::WARN).is_empty());
}

/// The fixtures that reach a handler, with their interaction tokens.
fn dispatched() -> Vec<(&'static str, String, Finished)> {
    let endpoint = endpoint();
    ["command_echo", "component", "modal", "autocomplete"]
        .into_iter()
        .map(|name| {
            let body = fixture(name);
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let token = json["token"].as_str().unwrap().to_owned();
            let head = head("POST", "/", &discord_headers(&body));
            (name, token, endpoint.receive(&head, [body], NOW))
        })
        .collect()
}

#[test]
fn debug_output_redacts_the_interaction_token_and_leaves_out_the_body() {
    for (name, token, finished) in dispatched() {
        assert!(token.len() > 20, "{name}: {token}");
        let finished_text = format!("{finished:?}");
        let Finished::Dispatch(dispatch) = finished else {
            panic!("{name} was not dispatched: {finished_text}");
        };
        let context = dispatch.context();
        let body_len = context.raw_body().len();
        for text in [
            format!("{context:?}"),
            format!("{context:#?}"),
            format!("{dispatch:?}"),
            finished_text.clone(),
            format!("{:?}", Target::from_context(context)),
        ] {
            assert!(!text.contains(&token), "{name}: token in {text}");
            // Nothing of the body either: not even a token's prefix.
            assert!(
                !text.contains(&token[..16]),
                "{name}: token prefix in {text}"
            );
        }
        let text = format!("{context:?}");
        assert!(text.contains("token: \"<redacted>\""), "{name}: {text}");
        assert!(
            text.contains(&format!("body_len: {body_len}")),
            "{name}: {text}"
        );
        // Still useful: the interaction's id and data are there.
        let id = context.interaction().id.to_string();
        assert!(text.contains(&id), "{name}: {text}");
        assert!(format!("{dispatch:?}").contains("<redacted>"), "{name}");
        // The raw body is still there for handlers.
        assert!(
            context
                .raw_body()
                .windows(token.len())
                .any(|w| w == token.as_bytes())
        );
    }
}
