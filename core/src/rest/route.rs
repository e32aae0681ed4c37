//! Routes: a method and a path, plus what the rate limiter needs to know about
//! them (the route's template, its top-level resource, whether it is
//! authenticated and bound by the global limit).

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use http::Method;
use http::uri::PathAndQuery;
use twilight_model::id::Id;
use twilight_model::id::marker::{
    ApplicationMarker, CommandMarker, GuildMarker, InteractionMarker, MessageMarker,
};

/// A route's identity for rate limiting: the method and the path template
/// (`POST /webhooks/{webhook_id}/{webhook_token}`), without ids or tokens.
///
/// Safe to log: it holds no secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    method: Method,
    template: Arc<str>,
}

impl RouteKey {
    /// The method.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path template, e.g. `/channels/{channel_id}/messages/{id}`.
    #[must_use]
    pub fn template(&self) -> &str {
        &self.template
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

impl fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RouteKey({self})")
    }
}

/// A route's top-level resource (Discord's "major parameter"): per-route
/// limits are counted separately for each value.
///
/// Tokens are kept only as a 64-bit digest, so a `Major` is safe to log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Major {
    /// The route has no top-level resource (e.g. `/applications/@me`).
    None,
    /// A channel or guild id.
    Id(u64),
    /// A webhook or interaction id with its token (digested).
    IdToken(u64, u64),
}

impl fmt::Debug for Major {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Id(id) => write!(f, "Id({id})"),
            Self::IdToken(id, _) => write!(f, "IdToken({id}, <token>)"),
        }
    }
}

/// A path given to [`Route::custom`] that cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPath;

impl fmt::Display for InvalidPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("route path must start with '/' and be a valid URI path and query")
    }
}

impl std::error::Error for InvalidPath {}

/// What the rate limiter needs to place a request: its route, its
/// top-level resource, and whether the global limit applies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitKey {
    /// The route.
    pub route: RouteKey,
    /// The route's top-level resource.
    pub major: Major,
    /// Whether the request counts against the bot's global limit.
    pub global: bool,
}

/// A Discord REST route: method, path (relative to the REST base URL, with
/// any query) and the facts rate limiting needs.
///
/// `Debug` shows the template and the top-level resource id, never a token
/// that the path holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    path: String,
    key: RouteKey,
    major: Major,
    authenticated: bool,
    global: bool,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("route", &self.key)
            .field("major", &self.major)
            .field("authenticated", &self.authenticated)
            .field("global", &self.global)
            .finish()
    }
}

/// Top-level resources: the first path segment, and the placeholder for the
/// id that follows it (and for a token after that).
fn top_level(resource: &str) -> Option<(&'static str, Option<&'static str>)> {
    match resource {
        "channels" => Some(("{channel_id}", None)),
        "guilds" => Some(("{guild_id}", None)),
        "webhooks" => Some(("{webhook_id}", Some("{webhook_token}"))),
        "interactions" => Some(("{interaction_id}", Some("{interaction_token}"))),
        _ => None,
    }
}

fn is_snowflake(segment: &str) -> bool {
    !segment.is_empty() && segment.len() <= 20 && segment.bytes().all(|b| b.is_ascii_digit())
}

fn digest(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// Percent-encode everything but RFC 3986 unreserved characters, so a token
/// stays one path segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0xF)]));
        }
    }
    out
}

impl Route {
    /// Any route, for everything the typed constructors do not cover; it is
    /// rate limited like the others.
    ///
    /// `path` is relative to the REST base URL (`/channels/123/messages`,
    /// optionally with a query). Its template and top-level resource are
    /// derived from it: the id after `channels`, `guilds`, `webhooks` or
    /// `interactions` is the top-level resource (with the token after a
    /// webhook or interaction id), other numeric segments become `{id}`, and
    /// the segment after `reactions` becomes `{emoji}`. Routes with a webhook
    /// or interaction token are sent without `Authorization` and outside the
    /// global limit (the token authenticates them; interaction endpoints are
    /// exempt from the global limit); the others with it and within.
    ///
    /// # Errors
    /// [`InvalidPath`] when `path` does not start with `/` or is not a valid
    /// URI path and query.
    pub fn custom(method: Method, path: impl Into<String>) -> Result<Self, InvalidPath> {
        let path: String = path.into();
        if !path.starts_with('/') || PathAndQuery::try_from(path.as_str()).is_err() {
            return Err(InvalidPath);
        }
        let bare = path.split(['?', '#']).next().unwrap_or_default();
        let segments: Vec<&str> = bare.split('/').skip(1).collect();
        let mut template = String::with_capacity(bare.len());
        let mut major = Major::None;
        let top = segments.first().and_then(|first| top_level(first));
        for (index, segment) in segments.iter().enumerate() {
            template.push('/');
            let previous = index.checked_sub(1).and_then(|at| segments.get(at));
            match (index, top, major) {
                (1, Some((id_name, _)), _) if is_snowflake(segment) => {
                    major = Major::Id(segment.parse().unwrap_or_default());
                    template.push_str(id_name);
                }
                (2, Some((_, Some(token_name))), Major::Id(id)) if !segment.is_empty() => {
                    major = Major::IdToken(id, digest(segment));
                    template.push_str(token_name);
                }
                _ if is_snowflake(segment) => template.push_str("{id}"),
                _ if previous == Some(&"reactions") => template.push_str("{emoji}"),
                _ => template.push_str(segment),
            }
        }
        if template.is_empty() {
            template.push('/');
        }
        let token_route = matches!(major, Major::IdToken(..));
        Ok(Self {
            path,
            key: RouteKey {
                method,
                template: template.into(),
            },
            major,
            authenticated: !token_route,
            global: !token_route,
        })
    }

    /// Override whether the `Authorization` header is sent.
    #[must_use]
    pub fn authenticated(mut self, authenticated: bool) -> Self {
        self.authenticated = authenticated;
        self
    }

    /// Override whether the route counts against the bot's global limit.
    #[must_use]
    pub fn global_limited(mut self, global: bool) -> Self {
        self.global = global;
        self
    }

    /// Typed routes are built from paths that are valid by construction;
    /// `custom` is total for them, and the fallback keeps this total too.
    fn known(method: Method, path: String) -> Self {
        Self::custom(method.clone(), path).unwrap_or_else(|InvalidPath| Self {
            path: "/".to_owned(),
            key: RouteKey {
                method,
                template: "/".into(),
            },
            major: Major::None,
            authenticated: true,
            global: true,
        })
    }

    /// `GET /applications/@me`: the bot's application (holds `verify_key`).
    #[must_use]
    pub fn fetch_application() -> Self {
        Self::known(Method::GET, "/applications/@me".to_owned())
    }

    /// `PATCH /applications/@me`: edit the bot's application (e.g. its
    /// interactions endpoint URL, which Discord validates before saving).
    #[must_use]
    pub fn update_application() -> Self {
        Self::known(Method::PATCH, "/applications/@me".to_owned())
    }

    /// `GET /oauth2/@me`: the current OAuth2 authorization (bearer tokens).
    #[must_use]
    pub fn fetch_authorization() -> Self {
        Self::known(Method::GET, "/oauth2/@me".to_owned())
    }

    /// `POST /interactions/{id}/{token}/callback`: the first response to an
    /// interaction.
    #[must_use]
    pub fn interaction_callback(interaction_id: Id<InteractionMarker>, token: &str) -> Self {
        Self::known(
            Method::POST,
            format!(
                "/interactions/{interaction_id}/{}/callback",
                encode_segment(token)
            ),
        )
    }

    /// `POST /interactions/{id}/{token}/callback?with_response=true`: the first
    /// response to an interaction, answered with an
    /// [`InteractionCallbackResponse`](super::InteractionCallbackResponse).
    /// Shares its rate-limit key with [`Route::interaction_callback`].
    #[must_use]
    pub fn interaction_callback_with_response(
        interaction_id: Id<InteractionMarker>,
        token: &str,
    ) -> Self {
        Self::known(
            Method::POST,
            format!(
                "/interactions/{interaction_id}/{}/callback?with_response=true",
                encode_segment(token)
            ),
        )
    }

    /// `/applications/{application_id}/commands` with `method` (`GET` to
    /// list, `POST` to create, `PUT` to overwrite all): global commands.
    #[must_use]
    pub fn global_commands(method: Method, application_id: Id<ApplicationMarker>) -> Self {
        Self::known(method, format!("/applications/{application_id}/commands"))
    }

    /// `/applications/{application_id}/commands/{command_id}` with `method`
    /// (`GET`, `PATCH` or `DELETE`): one global command.
    #[must_use]
    pub fn global_command(
        method: Method,
        application_id: Id<ApplicationMarker>,
        command_id: Id<CommandMarker>,
    ) -> Self {
        Self::known(
            method,
            format!("/applications/{application_id}/commands/{command_id}"),
        )
    }

    /// `/applications/{application_id}/guilds/{guild_id}/commands` with
    /// `method` (`GET` to list, `POST` to create, `PUT` to overwrite all):
    /// one guild's commands.
    #[must_use]
    pub fn guild_commands(
        method: Method,
        application_id: Id<ApplicationMarker>,
        guild_id: Id<GuildMarker>,
    ) -> Self {
        Self::known(
            method,
            format!("/applications/{application_id}/guilds/{guild_id}/commands"),
        )
    }

    /// `/applications/{application_id}/guilds/{guild_id}/commands/{command_id}`
    /// with `method` (`GET`, `PATCH` or `DELETE`): one guild command.
    #[must_use]
    pub fn guild_command(
        method: Method,
        application_id: Id<ApplicationMarker>,
        guild_id: Id<GuildMarker>,
        command_id: Id<CommandMarker>,
    ) -> Self {
        Self::known(
            method,
            format!("/applications/{application_id}/guilds/{guild_id}/commands/{command_id}"),
        )
    }

    /// `/webhooks/{application_id}/{token}/messages/@original` with `method`
    /// (`GET`, `PATCH` or `DELETE`): the original response.
    #[must_use]
    pub fn original_response(
        method: Method,
        application_id: Id<ApplicationMarker>,
        token: &str,
    ) -> Self {
        Self::known(
            method,
            format!(
                "/webhooks/{application_id}/{}/messages/@original",
                encode_segment(token)
            ),
        )
    }

    /// `POST /webhooks/{application_id}/{token}?wait=true`: a follow-up message.
    #[must_use]
    pub fn create_followup(application_id: Id<ApplicationMarker>, token: &str) -> Self {
        Self::known(
            Method::POST,
            format!(
                "/webhooks/{application_id}/{}?wait=true",
                encode_segment(token)
            ),
        )
    }

    /// `/webhooks/{application_id}/{token}/messages/{message_id}` with
    /// `method` (`GET`, `PATCH` or `DELETE`): a follow-up message.
    #[must_use]
    pub fn followup(
        method: Method,
        application_id: Id<ApplicationMarker>,
        token: &str,
        message_id: Id<MessageMarker>,
    ) -> Self {
        Self::known(
            method,
            format!(
                "/webhooks/{application_id}/{}/messages/{message_id}",
                encode_segment(token)
            ),
        )
    }

    /// The method.
    #[must_use]
    pub fn method(&self) -> &Method {
        &self.key.method
    }

    /// The path (and query) relative to the REST base URL. May hold a token:
    /// do not log it.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The route's identity for rate limiting (safe to log).
    #[must_use]
    pub fn key(&self) -> &RouteKey {
        &self.key
    }

    /// The top-level resource.
    #[must_use]
    pub fn major(&self) -> Major {
        self.major
    }

    /// Whether the `Authorization` header is sent.
    #[must_use]
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the route counts against the bot's global limit.
    #[must_use]
    pub fn is_global_limited(&self) -> bool {
        self.global
    }

    /// Everything the rate limiter needs.
    #[must_use]
    pub fn rate_limit_key(&self) -> RateLimitKey {
        RateLimitKey {
            route: self.key.clone(),
            major: self.major,
            global: self.global,
        }
    }
}
