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
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use ed25519_dalek::{Signer, SigningKey};
use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::InteractionData;
use twilight_model::application::interaction::application_command::CommandOptionValue;
use yuyo_core::endpoint::{
    Context, Endpoint, EndpointConfig, HandlerError, HandlerResult, Handlers, InteractionKind,
    OnConflict, Reply, Verifier,
};
use yuyo_core::service::Service;

/// The demo secret seed: 32 bytes of `0x07` (never a real application's key).
pub const DEMO_SECRET_SEED: [u8; 32] = [7; 32];
/// The demo public key, as 64 hex digits.
pub const DEMO_PUBLIC_KEY_HEX: &str =
    "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
/// The `X-Signature-Timestamp` the fixtures are signed with.
pub const DEMO_TIMESTAMP: &str = "1700000000";

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

/// The demo endpoint at `/` for `public_key`.
#[must_use]
pub fn demo_endpoint(public_key: Verifier) -> Endpoint {
    Endpoint::new(EndpointConfig::new(public_key), demo_handlers())
}

/// A service serving the demo endpoint at `/` for `public_key`, with default options.
#[must_use]
pub fn demo_service(public_key: Verifier) -> Service {
    Service::new(demo_endpoint(public_key))
}
