//! Typed requests for application commands, global or in one guild, over
//! twilight's [`Command`] model.

use http::Method;
use serde::Serialize;
use std::collections::HashMap;
use twilight_model::application::command::{Command, CommandOption, CommandType};
use twilight_model::application::interaction::InteractionContextType;
use twilight_model::guild::Permissions;
use twilight_model::id::Id;
use twilight_model::id::marker::{ApplicationMarker, CommandMarker, GuildMarker};
use twilight_model::oauth::ApplicationIntegrationType;

use super::request::{NoContent, Payload, RequestBody, RestRequest};
use super::route::Route;

/// The commands of an application, global or in one guild.
///
/// Bodies hold the writable fields of a [`Command`] (`id` only when
/// overwriting in bulk, where it identifies an existing command);
/// `application_id`, `guild_id` and `version` are Discord's to set.
///
/// ```
/// # use yuyo_core::rest::Commands;
/// # use twilight_model::application::command::{Command, CommandType};
/// # use twilight_model::id::Id;
/// # #[allow(deprecated)]
/// let ping = Command {
///     name: "ping".into(),
///     description: "Is the bot alive?".into(),
///     kind: CommandType::ChatInput,
///     # application_id: None, contexts: None, default_member_permissions: None,
///     # dm_permission: None, description_localizations: None, guild_id: None, id: None,
///     # integration_types: None, name_localizations: None, nsfw: None, options: Vec::new(),
///     version: Id::new(1),
///     // …
/// };
/// let commands = Commands::guild(Id::new(1), Id::new(2));
/// let overwrite = commands.set(&[ping])?; // RestRequest<Vec<Command>>
/// assert_eq!(overwrite.route().method(), "PUT");
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Commands {
    application_id: Id<ApplicationMarker>,
    guild_id: Option<Id<GuildMarker>>,
}

impl Commands {
    /// The global commands of `application_id`.
    #[must_use]
    pub fn global(application_id: Id<ApplicationMarker>) -> Self {
        Self {
            application_id,
            guild_id: None,
        }
    }

    /// The commands of `application_id` in `guild_id`.
    #[must_use]
    pub fn guild(application_id: Id<ApplicationMarker>, guild_id: Id<GuildMarker>) -> Self {
        Self {
            application_id,
            guild_id: Some(guild_id),
        }
    }

    /// The guild, for guild commands.
    #[must_use]
    pub fn guild_id(&self) -> Option<Id<GuildMarker>> {
        self.guild_id
    }

    fn all(&self, method: Method) -> Route {
        match self.guild_id {
            None => Route::global_commands(method, self.application_id),
            Some(guild_id) => Route::guild_commands(method, self.application_id, guild_id),
        }
    }

    fn one(&self, method: Method, command_id: Id<CommandMarker>) -> Route {
        match self.guild_id {
            None => Route::global_command(method, self.application_id, command_id),
            Some(guild_id) => {
                Route::guild_command(method, self.application_id, guild_id, command_id)
            }
        }
    }

    /// `GET …/commands`: every command (without localizations).
    #[must_use]
    pub fn list(&self) -> RestRequest<Vec<Command>> {
        RestRequest::new(self.all(Method::GET), RequestBody::Empty)
    }

    /// `GET …/commands?with_localizations=true`: every command with its name and
    /// description localizations (what [`Commands::plan_sync`] compares).
    #[must_use]
    pub fn list_with_localizations(&self) -> RestRequest<Vec<Command>> {
        let route = self.all(Method::GET);
        let path = format!("{}?with_localizations=true", route.path());
        RestRequest::new(
            Route::custom(Method::GET, path).unwrap_or(route),
            RequestBody::Empty,
        )
    }

    /// `GET …/commands/{command_id}`.
    #[must_use]
    pub fn get(&self, command_id: Id<CommandMarker>) -> RestRequest<Command> {
        RestRequest::new(self.one(Method::GET, command_id), RequestBody::Empty)
    }

    /// `POST …/commands`: create `command` (or replace the one with its name
    /// and type), answered with the stored command.
    ///
    /// # Errors
    /// The serialiser's error (twilight's command models do not fail).
    pub fn create(&self, command: &Command) -> Result<RestRequest<Command>, serde_json::Error> {
        let body = Payload::json(&CommandBody::new(command, false))?;
        Ok(RestRequest::new(self.all(Method::POST), body.into_body()))
    }

    /// `PATCH …/commands/{command_id}`: set every writable field of the
    /// command to `command`'s (its type cannot change).
    ///
    /// # Errors
    /// The serialiser's error (twilight's command models do not fail).
    pub fn edit(
        &self,
        command_id: Id<CommandMarker>,
        command: &Command,
    ) -> Result<RestRequest<Command>, serde_json::Error> {
        let mut body = CommandBody::new(command, false);
        body.kind = None;
        body.options = Some(&command.options);
        let body = Payload::json(&body)?;
        Ok(RestRequest::new(
            self.one(Method::PATCH, command_id),
            body.into_body(),
        ))
    }

    /// `DELETE …/commands/{command_id}`.
    #[must_use]
    pub fn delete(&self, command_id: Id<CommandMarker>) -> RestRequest<NoContent> {
        RestRequest::new(self.one(Method::DELETE, command_id), RequestBody::Empty)
    }

    /// `PUT …/commands`: replace every command with `commands` (commands
    /// missing from the list are deleted), answered with the stored commands.
    ///
    /// # Errors
    /// The serialiser's error (twilight's command models do not fail).
    pub fn set(
        &self,
        commands: &[Command],
    ) -> Result<RestRequest<Vec<Command>>, serde_json::Error> {
        let bodies: Vec<CommandBody<'_>> = commands
            .iter()
            .map(|command| CommandBody::new(command, true))
            .collect();
        let body = Payload::json(&bodies)?;
        Ok(RestRequest::new(self.all(Method::PUT), body.into_body()))
    }
}

/// The writable fields of a [`Command`].
#[derive(Serialize)]
pub(super) struct CommandBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Id<CommandMarker>>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_localizations: Option<&'a HashMap<String, String>>,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description_localizations: Option<&'a HashMap<String, String>>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<CommandType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<&'a [CommandOption]>,
    default_member_permissions: Option<Permissions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dm_permission: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contexts: Option<&'a [InteractionContextType]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    integration_types: Option<&'a [ApplicationIntegrationType]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nsfw: Option<bool>,
}

impl<'a> CommandBody<'a> {
    #[allow(deprecated)] // `dm_permission` is still sent when set.
    pub(super) fn new(command: &'a Command, with_id: bool) -> Self {
        Self {
            id: command.id.filter(|_| with_id),
            name: &command.name,
            name_localizations: command.name_localizations.as_ref(),
            description: &command.description,
            description_localizations: command.description_localizations.as_ref(),
            kind: Some(command.kind),
            options: Some(command.options.as_slice()).filter(|options| !options.is_empty()),
            default_member_permissions: command.default_member_permissions,
            dm_permission: command.dm_permission,
            contexts: command.contexts.as_deref(),
            integration_types: command.integration_types.as_deref(),
            nsfw: command.nsfw,
        }
    }
}
