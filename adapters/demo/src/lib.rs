//! The demo endpoint `yuyo serve` runs, the examples serve and the conformance suite
//! tests: its handlers, the demo key pair (the test identity of `core/fixtures/README.md`)
//! and signing. Its secret key is public: never serve it where Discord can reach it.
//!
//! | interaction | answer |
//! |---|---|
//! | command `echo` | message: the first string option, else `hello` |
//! | command `ephemeral` | ephemeral message |
//! | command `defer` | deferred response (type 5) |
//! | command `file` | message plus the attachment `hello.txt` = `hello file` |
//! | command `none` | no reply (204) |
//! | command `boom` | handler failure (500) |
//! | other commands | message ``unknown command `NAME` `` |
//! | autocomplete | two choices |
//! | button (component) | update message `clicked <custom_id>` |
//! | modal submit | message `modal <custom_id>` |
//!
//! [`demo_service`] also serves Discord's Webhook Events at [`DEMO_EVENTS_PATH`]
//! (`/events`): a PING gets 204, and every event is acknowledged with 204, then logged
//! at `info` by [`event`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use ed25519_dalek::{Signer, SigningKey};
use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::InteractionData;
use twilight_model::application::interaction::application_command::CommandOptionValue;
use yuyo_core::endpoint::{
    Context, Endpoint, EndpointConfig, EventContext, EventHandlers, EventResult, HandlerError,
    HandlerResult, Handlers, InteractionKind, OnConflict, Reply, Verifier, WebhookEvent,
};
use yuyo_core::service::Service;

/// The demo secret seed: 32 bytes of `0x07` (never a real application's key).
pub const DEMO_SECRET_SEED: [u8; 32] = [7; 32];
/// The demo public key, as 64 hex digits.
pub const DEMO_PUBLIC_KEY_HEX: &str =
    "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
/// The `X-Signature-Timestamp` the fixtures are signed with.
pub const DEMO_TIMESTAMP: &str = "1700000000";

/// The path [`demo_service`] serves Webhook Events at.
pub const DEMO_EVENTS_PATH: &str = "/events";

/// The content `ephemeral` answers with.
pub const EPHEMERAL_TEXT: &str = "only you can see this";
/// The content `file` answers with.
pub const FILE_TEXT: &str = "here is a file";
/// The name of the file `file` attaches.
pub const FILE_NAME: &str = "hello.txt";
/// The contents of the file `file` attaches.
pub const FILE_CONTENTS: &str = "hello file";
/// What `echo` answers without a string option.
pub const ECHO_DEFAULT: &str = "hello";

/// Ed25519(`secret_seed`, `timestamp ‖ body`) as 128 lower-case hex digits: the
/// `X-Signature-Ed25519` value Discord would send.
#[must_use]
pub fn sign(secret_seed: &[u8; 32], timestamp: &str, body: &[u8]) -> String {
    let key = SigningKey::from_bytes(secret_seed);
    let message = [timestamp.as_bytes(), body].concat();
    hex::encode(key.sign(&message).to_bytes())
}

/// The public key of `secret_seed`, as 64 lower-case hex digits.
#[must_use]
pub fn public_key_hex(secret_seed: &[u8; 32]) -> String {
    hex::encode(
        SigningKey::from_bytes(secret_seed)
            .verifying_key()
            .as_bytes(),
    )
}

/// The verifier for the demo key.
#[must_use]
pub fn demo_verifier() -> Verifier {
    let key = SigningKey::from_bytes(&DEMO_SECRET_SEED).verifying_key();
    match Verifier::from_bytes(key.as_bytes()) {
        Ok(verifier) => verifier,
        // The demo key is a fixed, valid key; this arm is unreachable.
        Err(error) => unreachable!("the demo key is valid: {error}"),
    }
}

/// The demo command handler (see the [module docs](self)).
pub async fn command(ctx: Context) -> HandlerResult {
    let Some(InteractionData::ApplicationCommand(data)) = &ctx.interaction().data else {
        return Err(HandlerError::msg("a command without command data"));
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
                .unwrap_or_else(|| ECHO_DEFAULT.to_owned());
            Ok(Some(Reply::message(text)))
        }
        "ephemeral" => Ok(Some(Reply::message(EPHEMERAL_TEXT).ephemeral())),
        "defer" => Ok(Some(Reply::deferred())),
        "file" => Ok(Some(
            Reply::message(FILE_TEXT).with_file(FILE_NAME, FILE_CONTENTS),
        )),
        "none" => Ok(None),
        "boom" => Err(HandlerError::msg("boom")),
        other => Ok(Some(Reply::message(format!("unknown command `{other}`")))),
    }
}

/// The demo autocomplete handler: two choices.
pub async fn autocomplete(_ctx: Context) -> HandlerResult {
    let choice = |name: &str, value: &str| CommandOptionChoice {
        name: name.to_owned(),
        name_localizations: None,
        value: CommandOptionChoiceValue::String(value.to_owned()),
    };
    Ok(Some(Reply::autocomplete(vec![
        choice("alpha", "alpha"),
        choice("beta", "beta"),
    ])))
}

/// The demo component handler: update the message to `clicked <custom_id>`.
pub async fn component(ctx: Context) -> HandlerResult {
    let Some(InteractionData::MessageComponent(data)) = &ctx.interaction().data else {
        return Err(HandlerError::msg("a component without component data"));
    };
    Ok(Some(Reply::update_message(format!(
        "clicked {}",
        data.custom_id
    ))))
}

/// The demo modal handler: message `modal <custom_id>`.
pub async fn modal(ctx: Context) -> HandlerResult {
    let Some(InteractionData::ModalSubmit(data)) = &ctx.interaction().data else {
        return Err(HandlerError::msg("a modal submit without modal data"));
    };
    Ok(Some(Reply::message(format!("modal {}", data.custom_id))))
}

/// The demo handlers, one per interaction kind.
#[must_use]
pub fn demo_handlers() -> Handlers {
    let mut handlers = Handlers::new();
    // `Replace` cannot fail, and each kind is set once on an empty registry anyway.
    let _ = handlers.set(
        InteractionKind::Command,
        yuyo_core::endpoint::Handler::new(command),
        OnConflict::Replace,
    );
    let _ = handlers.set(
        InteractionKind::Autocomplete,
        yuyo_core::endpoint::Handler::new(autocomplete),
        OnConflict::Replace,
    );
    let _ = handlers.set(
        InteractionKind::Component,
        yuyo_core::endpoint::Handler::new(component),
        OnConflict::Replace,
    );
    let _ = handlers.set(
        InteractionKind::Modal,
        yuyo_core::endpoint::Handler::new(modal),
        OnConflict::Replace,
    );
    handlers
}

/// The demo Webhook Event handler: logs the event at `info` (its type, application and
/// the ids it is about).
#[allow(clippy::unused_async)] // An event handler is async by contract.
pub async fn event(ctx: EventContext) -> EventResult {
    let name = ctx.name();
    let application = ctx.application_id().get();
    match ctx.event() {
        WebhookEvent::ApplicationAuthorized(data) => tracing::info!(
            event = name,
            application,
            user = data.user.id.get(),
            guild = data.guild_id().map(|id| id.get()),
            integration_type = data.integration_type,
            "webhook event: the app was authorized"
        ),
        WebhookEvent::ApplicationDeauthorized(data) => tracing::info!(
            event = name,
            application,
            user = data.user.id.get(),
            "webhook event: the app was deauthorized"
        ),
        WebhookEvent::EntitlementCreate(entitlement) => tracing::info!(
            event = name,
            application,
            entitlement = entitlement.id.get(),
            sku = entitlement.sku_id.get(),
            user = entitlement.user_id.map(|id| id.get()),
            "webhook event: an entitlement was created"
        ),
        _ => tracing::info!(
            event = name,
            application,
            timestamp = ctx.timestamp(),
            "webhook event"
        ),
    }
    Ok(())
}

/// The demo event handlers: [`event`] for every event.
#[must_use]
pub fn demo_event_handlers() -> EventHandlers {
    let mut events = EventHandlers::new();
    // `Replace` cannot fail.
    let _ = events.set(
        None,
        yuyo_core::endpoint::EventHandler::new(event),
        OnConflict::Replace,
    );
    events
}

/// The demo endpoint for `public_key`: interactions at `/`, and Webhook Events at
/// [`DEMO_EVENTS_PATH`].
#[must_use]
pub fn demo_endpoint(public_key: Verifier) -> Endpoint {
    demo_endpoint_with_events_at(public_key, Some(DEMO_EVENTS_PATH))
}

/// The demo endpoint for `public_key`: interactions at `/`, and Webhook Events at
/// `events_path` (`None`: no events path, so it is 404 like any other path).
#[must_use]
pub fn demo_endpoint_with_events_at(public_key: Verifier, events_path: Option<&str>) -> Endpoint {
    let config = EndpointConfig::new(public_key);
    demo_endpoint_for(match events_path {
        Some(path) => config.events_path(path),
        None => config,
    })
}

/// The demo handlers under `config`; the demo event handlers too if it has an events
/// path.
#[must_use]
pub fn demo_endpoint_for(config: EndpointConfig) -> Endpoint {
    if config.get_events_path().is_some() {
        Endpoint::with_events(config, demo_handlers(), demo_event_handlers())
    } else {
        Endpoint::new(config, demo_handlers())
    }
}

/// A service serving the demo endpoint for `public_key` (interactions at `/`, Webhook
/// Events at [`DEMO_EVENTS_PATH`]), with default options.
#[must_use]
pub fn demo_service(public_key: Verifier) -> Service {
    Service::new(demo_endpoint(public_key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use yuyo_core::endpoint::{Finished, Immediate};

    use super::*;

    const PING: &[u8] = include_bytes!("../../../core/fixtures/webhook_events/ping.json");
    const EVENTS: [&[u8]; 5] = [
        include_bytes!("../../../core/fixtures/webhook_events/application_authorized.json"),
        include_bytes!(
            "../../../core/fixtures/webhook_events/application_authorized_user_install.json"
        ),
        include_bytes!("../../../core/fixtures/webhook_events/application_deauthorized.json"),
        include_bytes!("../../../core/fixtures/webhook_events/entitlement_create.json"),
        include_bytes!("../../../core/fixtures/webhook_events/unknown_event.json"),
    ];

    fn receive(endpoint: &Endpoint, path: &str, body: &'static [u8]) -> Finished {
        let (head, ()) = http::Request::post(path)
            .header("content-type", "application/json")
            .header(
                "x-signature-ed25519",
                sign(&DEMO_SECRET_SEED, DEMO_TIMESTAMP, body),
            )
            .header("x-signature-timestamp", DEMO_TIMESTAMP)
            .body(())
            .unwrap()
            .into_parts();
        endpoint.receive(&head, [body.into()], 1_700_000_000)
    }

    #[test]
    fn the_demo_serves_webhook_events_at_events() {
        let endpoint = demo_service(demo_verifier()).endpoint().clone();
        assert_eq!(endpoint.config().get_events_path(), Some(DEMO_EVENTS_PATH));
        let ping = receive(&endpoint, DEMO_EVENTS_PATH, PING);
        assert!(
            matches!(ping, Finished::Respond(Immediate::Acknowledge)),
            "{ping:?}"
        );
        for body in EVENTS {
            let Finished::Event(event) = receive(&endpoint, DEMO_EVENTS_PATH, body) else {
                panic!("every event reaches the demo handler")
            };
            let done = event.acknowledge();
            assert_eq!(done.response.status(), 204);
            let after = done.after.unwrap();
            // The demo handler never waits: one poll finishes it.
            let mut after = std::pin::pin!(after);
            let waker = std::task::Waker::noop();
            let poll = after
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
            assert!(poll.is_ready());
        }
    }

    #[test]
    fn without_an_events_path_the_demo_is_as_before() {
        let endpoint = demo_endpoint_with_events_at(demo_verifier(), None);
        let finished = receive(&endpoint, DEMO_EVENTS_PATH, PING);
        assert!(matches!(
            finished,
            Finished::Respond(Immediate::Rejected(
                yuyo_core::endpoint::Rejection::NotFound
            ))
        ));
    }
}
