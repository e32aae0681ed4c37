//! The Discord request bodies of `core/fixtures/interactions`, exactly as Discord sends
//! them (see `core/fixtures/README.md`).

/// Type 1 PING.
pub const PING: &[u8] = include_bytes!("../../../core/fixtures/interactions/ping.json");
/// Command `echo` with a string option.
pub const COMMAND_ECHO: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/command_echo.json");
/// Command `ephemeral`.
pub const COMMAND_EPHEMERAL: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/command_ephemeral.json");
/// Command `defer`.
pub const COMMAND_DEFER: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/command_defer.json");
/// Command `file`.
pub const COMMAND_FILE: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/command_file.json");
/// Command `none`.
pub const COMMAND_NONE: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/command_none.json");
/// Command `boom`.
pub const COMMAND_BOOM: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/command_boom.json");
/// Type 4 autocomplete.
pub const AUTOCOMPLETE: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/autocomplete.json");
/// Type 3 button press, `custom_id` `confirm_button`.
pub const COMPONENT: &[u8] = include_bytes!("../../../core/fixtures/interactions/component.json");
/// Type 5 modal submit, `custom_id` `feedback_modal`.
pub const MODAL: &[u8] = include_bytes!("../../../core/fixtures/interactions/modal.json");
/// Type 99.
pub const UNKNOWN_TYPE: &[u8] =
    include_bytes!("../../../core/fixtures/interactions/unknown_type.json");

/// The text of the `echo` fixture's string option.
pub const ECHO_TEXT: &str = "Hello from the conformance suite! ✓ café";

/// The `echo` command fixture renamed to `name` (a command with the same payload).
#[must_use]
pub fn command_named(name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(COMMAND_ECHO);
    text.replacen(r#""name":"echo""#, &format!(r#""name":"{name}""#), 1)
        .into_bytes()
}

/// The `echo` command fixture without its options (so `echo` answers its default).
#[must_use]
pub fn command_echo_without_options() -> Vec<u8> {
    let text = String::from_utf8_lossy(COMMAND_ECHO);
    let options = format!(r#","options":[{{"name":"text","type":3,"value":"{ECHO_TEXT}"}}]"#);
    text.replacen(&options, "", 1).into_bytes()
}

/// The Webhook Events bodies of `core/fixtures/webhook_events`.
pub mod events {
    /// Type 0 PING.
    pub const PING: &[u8] = include_bytes!("../../../core/fixtures/webhook_events/ping.json");
    /// `APPLICATION_AUTHORIZED`, guild install.
    pub const APPLICATION_AUTHORIZED: &[u8] =
        include_bytes!("../../../core/fixtures/webhook_events/application_authorized.json");
    /// `APPLICATION_AUTHORIZED`, user install.
    pub const APPLICATION_AUTHORIZED_USER_INSTALL: &[u8] = include_bytes!(
        "../../../core/fixtures/webhook_events/application_authorized_user_install.json"
    );
    /// `APPLICATION_DEAUTHORIZED`.
    pub const APPLICATION_DEAUTHORIZED: &[u8] =
        include_bytes!("../../../core/fixtures/webhook_events/application_deauthorized.json");
    /// `ENTITLEMENT_CREATE`.
    pub const ENTITLEMENT_CREATE: &[u8] =
        include_bytes!("../../../core/fixtures/webhook_events/entitlement_create.json");
    /// An event type no library knows (`SOMETHING_NEW`).
    pub const UNKNOWN_EVENT: &[u8] =
        include_bytes!("../../../core/fixtures/webhook_events/unknown_event.json");

    /// Every event (not the PING), with the `event.type` it holds.
    pub const ALL: [(&str, &[u8]); 5] = [
        ("APPLICATION_AUTHORIZED", APPLICATION_AUTHORIZED),
        (
            "APPLICATION_AUTHORIZED",
            APPLICATION_AUTHORIZED_USER_INSTALL,
        ),
        ("APPLICATION_DEAUTHORIZED", APPLICATION_DEAUTHORIZED),
        ("ENTITLEMENT_CREATE", ENTITLEMENT_CREATE),
        ("SOMETHING_NEW", UNKNOWN_EVENT),
    ];
}
