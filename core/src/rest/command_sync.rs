//! Deploying application commands: a JSON file checked against Discord's rules
//! ([`parse_commands`]), and the plan that makes Discord's set equal to it
//! ([`Commands::plan_sync`]): nothing to do, or one bulk overwrite. Sans-IO: the caller
//! fetches the current set ([`Commands::list_with_localizations`]) and sends the planned
//! request.
//!
//! ```
//! # use yuyo_core::rest::{CommandSync, Commands, parse_commands};
//! # use twilight_model::id::Id;
//! let desired = parse_commands(br#"[{"name": "ping", "description": "Is the bot alive?"}]"#)
//!     .map_err(|problems| problems[0].to_string())?;
//! let commands = Commands::global(Id::new(1));
//! // `current` is what `commands.list_with_localizations()` answered.
//! let current = Vec::new();
//! match commands.plan_sync(&current, &desired).map_err(|e| e.to_string())? {
//!     CommandSync::UpToDate => {}
//!     CommandSync::Overwrite { changes, request } => {
//!         assert_eq!(changes[0].to_string(), "+ ping");
//!         assert_eq!(request.route().method(), "PUT");
//!     }
//! }
//! # Ok::<_, String>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};
use twilight_model::application::command::{Command, CommandOption, CommandType};

use super::commands::{CommandBody, Commands};
use super::request::RestRequest;

/// Most chat-input (slash) commands an application may have in one scope.
pub const MAX_CHAT_INPUT_COMMANDS: usize = 100;
/// Most user or message (context menu) commands of each type in one scope.
pub const MAX_CONTEXT_MENU_COMMANDS: usize = 15;
/// Most options (or choices) of a command or of a subcommand.
pub const MAX_OPTIONS: usize = 25;
/// Longest command or option name, in characters.
pub const MAX_NAME: usize = 32;
/// Longest command or option description, in characters.
pub const MAX_DESCRIPTION: usize = 100;

/// What is wrong with one command of a list (or with the list itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandProblem {
    /// The command's position in the list, from 1; `None` for the list itself.
    pub position: Option<usize>,
    /// The command's name, when it has one.
    pub name: Option<String>,
    /// The problem, naming the field (`description is missing`,
    /// `options[1].name: "Foo" has upper-case letters …`).
    pub problem: String,
}

impl fmt::Display for CommandProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.position, &self.name) {
            (Some(position), Some(name)) => {
                write!(f, "command {position} (`{name}`): {}", self.problem)
            }
            (Some(position), None) => write!(f, "command {position}: {}", self.problem),
            (None, _) => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for CommandProblem {}

fn list_problem(problem: String) -> Vec<CommandProblem> {
    vec![CommandProblem {
        position: None,
        name: None,
        problem,
    }]
}

/// Reads a JSON array of commands as Discord's bulk overwrite takes them (`type`
/// defaults to 1, chat input; `id`, `application_id` and `version` are not needed),
/// then checks them with [`validate_commands`].
///
/// # Errors
/// Every problem found, each naming the command and the field.
pub fn parse_commands(json: &[u8]) -> Result<Vec<Command>, Vec<CommandProblem>> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| list_problem(format!("not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(list_problem(format!(
            "expected a JSON array of commands, found {}",
            kind_of(&value)
        )));
    };
    let mut commands = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let (name, found) = match parse_one(item) {
            Ok(command) => {
                let mut found = Vec::new();
                check_command(&command, &mut found);
                let name = command.name.clone();
                commands.push(command);
                (Some(name), found)
            }
            Err((name, problem)) => (name, vec![problem]),
        };
        problems.extend(found.into_iter().map(|problem| CommandProblem {
            position: Some(index + 1),
            name: name.clone(),
            problem,
        }));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    validate_commands(&commands)?;
    Ok(commands)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One command from its JSON; on failure its name (if any) and the problem.
fn parse_one(item: Value) -> Result<Command, (Option<String>, String)> {
    let Value::Object(mut object) = item else {
        return Err((
            None,
            format!("expected an object, found {}", kind_of(&item)),
        ));
    };
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let fail = |problem: String| (name.clone(), problem);
    if !object.contains_key("name") {
        return Err(fail("name is missing".to_owned()));
    }
    let kind = object.entry("type").or_insert(Value::from(1_u8)).as_u64();
    if kind == Some(1) {
        if !object.contains_key("description") {
            return Err(fail(
                "description is missing (chat-input commands need 1 to 100 characters)".to_owned(),
            ));
        }
    } else {
        object
            .entry("description")
            .or_insert(Value::String(String::new()));
    }
    object.entry("version").or_insert(Value::from("1"));
    serde_json::from_value(Value::Object(object)).map_err(|e| fail(e.to_string()))
}

/// Checks Discord's basic rules: names 1-32 characters (lower case, no spaces for
/// chat-input commands and options), descriptions 1-100 characters (empty for user and
/// message commands), at most 25 options and choices at each level, at most 100
/// chat-input and 15 user and message commands, no name used twice.
///
/// # Errors
/// Every problem found.
pub fn validate_commands(commands: &[Command]) -> Result<(), Vec<CommandProblem>> {
    let mut problems = Vec::new();
    let mut seen: HashMap<(u8, &str), usize> = HashMap::new();
    for (index, command) in commands.iter().enumerate() {
        let mut found = Vec::new();
        check_command(command, &mut found);
        if let Some(first) = seen.insert((u8::from(command.kind), &command.name), index + 1) {
            found.push(format!(
                "the name is already used by command {first} of the same type"
            ));
        }
        problems.extend(found.into_iter().map(|problem| CommandProblem {
            position: Some(index + 1),
            name: Some(command.name.clone()),
            problem,
        }));
    }
    for (kind, label, max) in [
        (
            CommandType::ChatInput,
            "chat-input",
            MAX_CHAT_INPUT_COMMANDS,
        ),
        (CommandType::User, "user", MAX_CONTEXT_MENU_COMMANDS),
        (CommandType::Message, "message", MAX_CONTEXT_MENU_COMMANDS),
    ] {
        let count = commands.iter().filter(|c| c.kind == kind).count();
        if count > max {
            problems.extend(list_problem(format!(
                "{count} {label} commands: Discord allows at most {max}"
            )));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_command(command: &Command, found: &mut Vec<String>) {
    let chat_input = command.kind == CommandType::ChatInput;
    check_name("name", &command.name, chat_input, found);
    if chat_input {
        check_description("description", &command.description, found);
        check_options("options", &command.options, found);
    } else if let CommandType::Unknown(kind) = command.kind {
        found.push(format!(
            "type {kind} is not a command type (1: chat input, 2: user, 3: message)"
        ));
    } else {
        if !command.description.is_empty() {
            found.push("description must be empty for user and message commands".to_owned());
        }
        if !command.options.is_empty() {
            found.push("user and message commands take no options".to_owned());
        }
    }
}

fn check_name(field: &str, name: &str, strict: bool, found: &mut Vec<String>) {
    let length = name.chars().count();
    if length == 0 || length > MAX_NAME {
        found.push(format!(
            "{field} {name:?} has {length} characters; Discord takes 1 to {MAX_NAME}"
        ));
    }
    if strict && name.chars().any(char::is_uppercase) {
        found.push(format!(
            "{field} {name:?} has upper-case letters; chat-input names must be lower case"
        ));
    }
    if strict && name.chars().any(|c| c.is_whitespace()) {
        found.push(format!(
            "{field} {name:?} has spaces; use `-` or `_` in chat-input names"
        ));
    }
}

fn check_description(field: &str, description: &str, found: &mut Vec<String>) {
    let length = description.chars().count();
    if length == 0 {
        found.push(format!(
            "{field} is empty; Discord takes 1 to {MAX_DESCRIPTION} characters"
        ));
    } else if length > MAX_DESCRIPTION {
        found.push(format!(
            "{field} has {length} characters; Discord takes at most {MAX_DESCRIPTION}"
        ));
    }
}

fn check_options(field: &str, options: &[CommandOption], found: &mut Vec<String>) {
    if options.len() > MAX_OPTIONS {
        found.push(format!(
            "{field} has {} entries; Discord allows at most {MAX_OPTIONS}",
            options.len()
        ));
    }
    for (index, option) in options.iter().enumerate() {
        let at = format!("{field}[{index}]");
        check_name(&format!("{at}.name"), &option.name, true, found);
        check_description(&format!("{at}.description"), &option.description, found);
        if let Some(choices) = &option.choices
            && choices.len() > MAX_OPTIONS
        {
            found.push(format!(
                "{at}.choices has {} entries; Discord allows at most {MAX_OPTIONS}",
                choices.len()
            ));
        }
        if let Some(nested) = &option.options {
            check_options(&format!("{at}.options"), nested, found);
        }
    }
}

/// One difference between Discord's commands and the desired ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandChange {
    /// A command Discord does not have yet.
    Added(String),
    /// A command Discord has that is not desired (the overwrite deletes it).
    Removed(String),
    /// A command whose fields differ.
    Changed(String),
}

impl fmt::Display for CommandChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added(name) => write!(f, "+ {name}"),
            Self::Removed(name) => write!(f, "- {name}"),
            Self::Changed(name) => write!(f, "~ {name}"),
        }
    }
}

/// What [`Commands::plan_sync`] decided.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per sync, never stored
pub enum CommandSync {
    /// Discord's commands already are the desired ones: send nothing.
    UpToDate,
    /// Send `request` (the bulk overwrite) to apply `changes`.
    Overwrite {
        /// What differs, by command.
        changes: Vec<CommandChange>,
        /// `PUT …/commands` with the desired commands.
        request: RestRequest<Vec<Command>>,
    },
}

impl Commands {
    /// Compares `current` (what [`Commands::list_with_localizations`] answered) with
    /// `desired` on the
    /// fields that matter (ids, versions and the application are ignored; fields Discord
    /// fills in when they are not sent, such as `contexts`, are compared only when
    /// `desired` sets them) and plans the bulk overwrite, if one is needed.
    ///
    /// # Errors
    /// The serialiser's error (twilight's command models do not fail).
    pub fn plan_sync(
        &self,
        current: &[Command],
        desired: &[Command],
    ) -> Result<CommandSync, serde_json::Error> {
        let changes = command_changes(current, desired)?;
        if changes.is_empty() {
            return Ok(CommandSync::UpToDate);
        }
        Ok(CommandSync::Overwrite {
            changes,
            request: self.set(desired)?,
        })
    }
}

/// What differs between `current` and `desired`, keyed by type and name.
fn command_changes(
    current: &[Command],
    desired: &[Command],
) -> Result<Vec<CommandChange>, serde_json::Error> {
    let key = |command: &Command| (u8::from(command.kind), command.name.clone());
    let mut existing: HashMap<(u8, String), Value> = HashMap::new();
    for command in current {
        existing.insert(
            key(command),
            serde_json::to_value(CommandBody::new(command, false))?,
        );
    }
    let mut changes = Vec::new();
    for command in desired {
        let wanted = serde_json::to_value(CommandBody::new(command, false))?;
        match existing.remove(&key(command)) {
            None => changes.push(CommandChange::Added(command.name.clone())),
            Some(have) if !same(&wanted, &have, true) => {
                changes.push(CommandChange::Changed(command.name.clone()));
            }
            Some(_) => {}
        }
    }
    let mut removed: Vec<_> = existing.into_keys().map(|(_, name)| name).collect();
    removed.sort();
    changes.extend(removed.into_iter().map(CommandChange::Removed));
    Ok(changes)
}

/// Fields Discord fills in with defaults when they are not sent.
const DEFAULTED: [&str; 3] = ["contexts", "integration_types", "dm_permission"];

/// Whether `value` carries nothing: absent, null, false, `[]`, `{}` or `""`.
fn is_blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::String(text)) => text.is_empty(),
        Some(Value::Number(_) | Value::Bool(true)) => false,
    }
}

/// `wanted` and `have` are equal, blanks being equal to each other; at the top level
/// (`top`), a defaulted field `wanted` does not set is not compared.
fn same(wanted: &Value, have: &Value, top: bool) -> bool {
    match (wanted, have) {
        (Value::Object(wanted), Value::Object(have)) => same_fields(wanted, have, top),
        (Value::Array(wanted), Value::Array(have)) => {
            wanted.len() == have.len() && wanted.iter().zip(have).all(|(w, h)| same(w, h, false))
        }
        _ => wanted == have || (is_blank(Some(wanted)) && is_blank(Some(have))),
    }
}

fn same_fields(wanted: &Map<String, Value>, have: &Map<String, Value>, top: bool) -> bool {
    let keys = wanted.keys().chain(have.keys());
    keys.filter(|key| !(top && DEFAULTED.contains(&key.as_str()) && !wanted.contains_key(*key)))
        .all(|key| match (wanted.get(key), have.get(key)) {
            (Some(w), Some(h)) => same(w, h, false),
            (w, h) => is_blank(w) && is_blank(h),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use twilight_model::id::Id;

    use super::*;
    use crate::rest::{ApplicationUpdate, RequestBody};

    fn problems(json: &str) -> Vec<String> {
        parse_commands(json.as_bytes())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_a_file_with_defaults() {
        let commands = parse_commands(
            br#"[{"name": "ping", "description": "Pong?"},
                 {"name": "Report user", "type": 2},
                 {"name": "echo", "description": "Echo", "options": [
                    {"type": 3, "name": "text", "description": "What to say", "required": true}]}]"#,
        )
        .unwrap();
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0].kind, CommandType::ChatInput);
        assert_eq!(commands[1].kind, CommandType::User);
        assert_eq!(commands[1].description, "");
        assert_eq!(commands[2].options[0].name, "text");
    }

    #[test]
    fn names_the_command_and_the_field() {
        assert_eq!(
            problems(r#"[{"name": "a", "description": "b"}, {"name": "ping"}]"#),
            [
                "command 2 (`ping`): description is missing (chat-input commands need 1 to 100 characters)"
            ]
        );
        assert_eq!(
            problems(r#"[{"description": "b"}]"#),
            ["command 1: name is missing"]
        );
        assert_eq!(
            problems(r#"[{"name": "Ping", "description": ""}]"#),
            [
                r#"command 1 (`Ping`): name "Ping" has upper-case letters; chat-input names must be lower case"#,
                "command 1 (`Ping`): description is empty; Discord takes 1 to 100 characters",
            ]
        );
        let long = "x".repeat(101);
        let json = format!(
            r#"[{{"name": "echo", "description": "e", "options": [
                {{"type": 3, "name": "text", "description": "{long}"}}]}}]"#
        );
        assert_eq!(
            problems(&json),
            [
                "command 1 (`echo`): options[0].description has 101 characters; Discord takes at most 100"
            ]
        );
        assert_eq!(
            problems(r#"[{"name": "a", "description": "b"}, {"name": "a", "description": "c"}]"#),
            ["command 2 (`a`): the name is already used by command 1 of the same type"]
        );
        assert!(problems(r#"{"name": "a"}"#)[0].starts_with("expected a JSON array"));
        assert!(problems("[").pop().unwrap().starts_with("not valid JSON"));
        assert!(
            problems(r#"[{"name": "a", "description": 5}]"#)[0]
                .starts_with("command 1 (`a`): invalid type")
        );
    }

    #[test]
    fn counts_commands_and_options() {
        let many: Vec<String> = (0..101)
            .map(|i| format!(r#"{{"name": "c{i}", "description": "d"}}"#))
            .collect();
        assert_eq!(
            problems(&format!("[{}]", many.join(","))),
            ["101 chat-input commands: Discord allows at most 100"]
        );
        let options: Vec<String> = (0..26)
            .map(|i| format!(r#"{{"type": 5, "name": "o{i}", "description": "d"}}"#))
            .collect();
        let json = format!(
            r#"[{{"name": "a", "description": "b", "options": [{}]}}]"#,
            options.join(",")
        );
        assert_eq!(
            problems(&json),
            ["command 1 (`a`): options has 26 entries; Discord allows at most 25"]
        );
    }

    /// `desired` as Discord would answer it: ids, versions, defaults filled in.
    fn as_stored(desired: &[Command]) -> Vec<Command> {
        let mut stored: Vec<Value> = desired
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        for (i, command) in stored.iter_mut().enumerate() {
            let object = command.as_object_mut().unwrap();
            object.insert("id".into(), Value::from(format!("{}", 100 + i)));
            object.insert("application_id".into(), Value::from("1"));
            object.insert("version".into(), Value::from("999"));
            object.insert("contexts".into(), serde_json::json!([0, 1, 2]));
            object.insert("integration_types".into(), serde_json::json!([0]));
            object.insert("dm_permission".into(), Value::from(true));
            object.insert("nsfw".into(), Value::from(false));
        }
        serde_json::from_value(Value::Array(stored)).unwrap()
    }

    #[test]
    fn plans_nothing_when_discord_has_the_same_commands() {
        let desired = parse_commands(
            br#"[{"name": "ping", "description": "Pong?"},
                 {"name": "echo", "description": "Echo", "options": [
                    {"type": 3, "name": "text", "description": "What"}]}]"#,
        )
        .unwrap();
        let commands = Commands::global(Id::new(1));
        let mut current = as_stored(&desired);
        current.reverse();
        assert!(matches!(
            commands.plan_sync(&current, &desired).unwrap(),
            CommandSync::UpToDate
        ));

        current[0].options[0].description = "Something else".into();
        current[1].name = "old".into();
        let CommandSync::Overwrite { changes, request } =
            commands.plan_sync(&current, &desired).unwrap()
        else {
            panic!("no overwrite planned");
        };
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["+ ping", "~ echo", "- old"]);
        assert_eq!(request.route().method(), "PUT");
        assert_eq!(request.route().path(), "/applications/1/commands");
        let list = commands.list_with_localizations();
        assert_eq!(
            list.route().path(),
            "/applications/1/commands?with_localizations=true"
        );
        assert_eq!(list.route().key().template(), "/applications/{id}/commands");
        let RequestBody::Json(body) = request.body() else {
            panic!("not JSON");
        };
        let sent: Vec<Value> = serde_json::from_slice(body).unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0]["name"], "ping");
    }

    #[test]
    fn a_defaulted_field_set_in_the_file_is_compared() {
        let desired =
            parse_commands(br#"[{"name": "ping", "description": "P", "contexts": [0]}]"#).unwrap();
        let commands = Commands::guild(Id::new(1), Id::new(2));
        let current = as_stored(&desired); // contexts [0, 1, 2]
        assert!(matches!(
            commands.plan_sync(&current, &desired).unwrap(),
            CommandSync::Overwrite { .. }
        ));
    }

    #[test]
    fn update_application_sends_only_the_set_fields() {
        let update = ApplicationUpdate {
            event_webhooks_url: Some("https://e.example/".into()),
            event_webhooks_status: Some(2),
            ..ApplicationUpdate::default()
        };
        let request = RestRequest::update_application(&update).unwrap();
        assert_eq!(request.route().method(), "PATCH");
        assert_eq!(request.route().path(), "/applications/@me");
        assert_eq!(
            request.body(),
            &RequestBody::Json(
                br#"{"event_webhooks_url":"https://e.example/","event_webhooks_status":2}"#
                    .to_vec()
                    .into()
            )
        );
    }
}
