//! Shared test helpers: the fixed test identity, fixtures, request building
//! and a minimal driver.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod driver;
pub mod interleaving;

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use http::request::Parts;
use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::InteractionData;
use twilight_model::application::interaction::application_command::CommandOptionValue;
use yuyo_core::endpoint::{
    Endpoint, EndpointConfig, Finished, HandlerError, Handlers, Reply, ResponseBody, Verifier,
};

/// Request headers as (name, value) pairs, in order.
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// The default `X-Signature-Timestamp` of the fixtures README.
pub const TIMESTAMP: &str = "1700000000";
/// "Now" for tests, equal to the timestamp.
pub const NOW: u64 = 1_700_000_000;

/// The fixed test signing key: seed = 32 bytes of 0x07.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// 128 lower-case hex digits: Ed25519(seed, timestamp ‖ body).
pub fn sign(timestamp: &[u8], body: &[u8]) -> String {
    let message = [timestamp, body].concat();
    hex::encode(signing_key().sign(&message).to_bytes())
}

/// A fixture body, as Discord sends it.
pub fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/fixtures/interactions/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

pub const FIXTURES: [&str; 12] = [
    "ping",
    "command_echo",
    "command_load",
    "command_defer",
    "command_none",
    "command_boom",
    "command_file",
    "command_ephemeral",
    "autocomplete",
    "component",
    "modal",
    "unknown_type",
];

pub fn verifier() -> Verifier {
    Verifier::from_hex("ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c").unwrap()
}

pub fn config() -> EndpointConfig {
    EndpointConfig::new(verifier())
}

/// Handlers for every kind, answering the fixture commands as their names say.
pub fn handlers() -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .set_command(|ctx| async move {
            let Some(InteractionData::ApplicationCommand(data)) = &ctx.interaction().data else {
                return Err(HandlerError::msg("not a command"));
            };
            match data.name.as_str() {
                "echo" => {
                    let text = data
                        .options
                        .iter()
                        .find_map(|option| match &option.value {
                            CommandOptionValue::String(text) => Some(text.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    Ok(Some(Reply::message(text)))
                }
                "defer" => Ok(Some(Reply::deferred())),
                "none" => Ok(None),
                "boom" => Err(HandlerError::msg("boom")),
                "file" => Ok(Some(
                    Reply::message("file attached").with_file("hello world.txt", "hello"),
                )),
                "ephemeral" => Ok(Some(Reply::message("secret").ephemeral())),
                other => Err(HandlerError::msg(format!("unknown command {other}"))),
            }
        })
        .unwrap()
        .set_component(|ctx| async move {
            let Some(InteractionData::MessageComponent(data)) = &ctx.interaction().data else {
                return Err(HandlerError::msg("not a component"));
            };
            Ok(Some(Reply::update_message(format!(
                "clicked {}",
                data.custom_id
            ))))
        })
        .unwrap()
        .set_autocomplete(|_ctx| async move {
            Ok(Some(Reply::autocomplete(vec![CommandOptionChoice {
                name: "one".to_owned(),
                name_localizations: None,
                value: CommandOptionChoiceValue::String("1".to_owned()),
            }])))
        })
        .unwrap()
        .set_modal(|ctx| async move {
            let Some(InteractionData::ModalSubmit(data)) = &ctx.interaction().data else {
                return Err(HandlerError::msg("not a modal"));
            };
            Ok(Some(Reply::message(format!(
                "submitted {}",
                data.custom_id
            ))))
        })
        .unwrap();
    handlers
}

pub fn endpoint() -> Endpoint {
    Endpoint::new(config(), handlers())
}

/// The headers Discord sends for `body` (Host, User-Agent, Content-Type,
/// Content-Length and both signature headers), as (name, value) pairs.
pub fn discord_headers(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("Host".into(), b"bot.example.com".to_vec()),
        (
            "User-Agent".into(),
            b"Discord-Interactions/1.0 (+https://discord.com)".to_vec(),
        ),
        ("Content-Type".into(), b"application/json".to_vec()),
        ("Content-Length".into(), body.len().to_string().into_bytes()),
        (
            "X-Signature-Ed25519".into(),
            sign(TIMESTAMP.as_bytes(), body).into_bytes(),
        ),
        (
            "X-Signature-Timestamp".into(),
            TIMESTAMP.as_bytes().to_vec(),
        ),
    ]
}

/// A request head from a method, a request target and header pairs (names in
/// any case, values any bytes a header can hold).
pub fn head(method: &str, target: &str, headers: &[(String, Vec<u8>)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), http::HeaderValue::from_bytes(value).unwrap());
    }
    builder.body(()).unwrap().into_parts().0
}

/// A fully-driven exchange's outcome, in comparable form.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Outcome {
    pub status: u16,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub allow: Option<String>,
    pub body: Vec<u8>,
    pub has_after: bool,
}

impl Outcome {
    /// The outcome with its multipart boundary, random for every body, replaced
    /// by a fixed one of the same length, so two runs of an exchange compare equal.
    pub fn fixed_boundary(mut self) -> Self {
        const PREFIX: &str = "multipart/form-data; boundary=";
        let Some(boundary) = self
            .content_type
            .as_deref()
            .and_then(|content_type| content_type.strip_prefix(PREFIX))
            .map(|boundary| boundary.as_bytes().to_vec())
        else {
            return self;
        };
        let fixed = format!("yuyo-{}", "0".repeat(boundary.len().saturating_sub(5)));
        self.content_type = Some(format!("{PREFIX}{fixed}"));
        let mut body = Vec::with_capacity(self.body.len());
        let mut rest = &self.body[..];
        while !rest.is_empty() {
            if rest.starts_with(&boundary) {
                body.extend_from_slice(fixed.as_bytes());
                rest = &rest[boundary.len()..];
            } else {
                body.push(rest[0]);
                rest = &rest[1..];
            }
        }
        self.body = body;
        self
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub fn outcome(response: http::Response<ResponseBody>, has_after: bool) -> Outcome {
    let header = |name: http::header::HeaderName| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let content_length = header(http::header::CONTENT_LENGTH);
    let allow = header(http::header::ALLOW);
    let status = response.status().as_u16();
    let body = match response.into_body() {
        ResponseBody::Empty => Vec::new(),
        ResponseBody::Full(bytes) => bytes.to_vec(),
        ResponseBody::Multipart(body) => body.to_bytes().unwrap().to_vec(),
    };
    Outcome {
        status,
        content_type,
        content_length,
        allow,
        body,
        has_after,
    }
}

/// Drive an exchange to the end, the way an adapter does (with a trivial
/// executor).
pub fn drive(endpoint: &Endpoint, head: &Parts, chunks: Vec<Bytes>, now: u64) -> Outcome {
    match endpoint.receive(head, chunks, now) {
        Finished::Respond(immediate) => outcome(immediate.into_response(), false),
        Finished::Dispatch(dispatch) => {
            let (responding, future) = dispatch.start();
            let done = responding.complete(futures::executor::block_on(future));
            let has_after = done.after.is_some();
            outcome(done.response, has_after)
        }
        Finished::Event(event) => {
            let done = event.acknowledge();
            let has_after = done.after.is_some();
            outcome(done.response, has_after)
        }
    }
}

/// A signed, Discord-shaped POST of `body` to `/`, driven in one chunk.
pub fn post(endpoint: &Endpoint, body: &[u8]) -> Outcome {
    let head = head("POST", "/", &discord_headers(body));
    drive(endpoint, &head, vec![Bytes::copy_from_slice(body)], NOW)
}
