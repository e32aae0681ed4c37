//! Who the client is: the token, its type, and strategies that produce the
//! `Authorization` header.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

/// The kind of token in the `Authorization` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// A bot token: `Authorization: Bot <token>` (the default).
    #[default]
    Bot,
    /// An OAuth2 access token: `Authorization: Bearer <token>`.
    Bearer,
}

impl TokenType {
    /// The scheme word on the wire (`Bot` or `Bearer`).
    #[must_use]
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Bot => "Bot",
            Self::Bearer => "Bearer",
        }
    }
}

/// Why no `Authorization` header could be produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The token holds characters a header cannot carry (control characters,
    /// non-ASCII). The token itself is never included.
    InvalidCharacters,
    /// A [`TokenStrategy`] could not produce a token (for example a refresh
    /// failed); the message is the strategy's and must not hold the secret.
    Unavailable(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCharacters => f.write_str("token holds characters a header cannot carry"),
            Self::Unavailable(why) => write!(f, "token unavailable: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

/// Produces the `Authorization` header value for each request, e.g. a
/// client-credentials token that is refreshed before it expires.
///
/// Sans-IO: `authorization` is called with the caller's `now` each time a
/// request is about to be sent (so a retry picks up a refreshed token); a
/// strategy that needs network IO to refresh is refreshed by its adapter and
/// reports [`TokenError::Unavailable`] until it has a token.
///
/// Implementations must mark the returned value sensitive
/// ([`HeaderValue::set_sensitive`]) and keep the token out of their `Debug`.
pub trait TokenStrategy: Send + Sync + fmt::Debug {
    /// The token type, which decides where the public key is discovered
    /// (`Bot` → `/applications/@me`, `Bearer` → `/oauth2/@me`).
    fn token_type(&self) -> TokenType;

    /// The full header value (`Bot …` or `Bearer …`) to send at `now`.
    ///
    /// # Errors
    /// [`TokenError`] when no token is available.
    fn authorization(&self, now: Instant) -> Result<HeaderValue, TokenError>;

    /// Discord answered 401 to a request sent with `rejected`: a refreshing
    /// strategy should drop it. The default does nothing.
    fn invalidate(&self, rejected: &HeaderValue) {
        let _ = rejected;
    }
}

/// A fixed token of a given type: the [`TokenStrategy`] behind
/// [`RestConfigBuilder::token`](super::RestConfigBuilder::token).
#[derive(Clone)]
pub struct StaticToken {
    token_type: TokenType,
    header: HeaderValue,
}

impl StaticToken {
    /// A strategy that always answers `<type> <token>`.
    ///
    /// # Errors
    /// [`TokenError::InvalidCharacters`] when the token cannot be carried in a
    /// header.
    pub fn new(token: &str, token_type: TokenType) -> Result<Self, TokenError> {
        let token = token.trim();
        let mut header = HeaderValue::try_from(format!("{} {token}", token_type.scheme()))
            .map_err(|_| TokenError::InvalidCharacters)?;
        header.set_sensitive(true);
        Ok(Self { token_type, header })
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("token_type", &self.token_type)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TokenStrategy for StaticToken {
    fn token_type(&self) -> TokenType {
        self.token_type
    }

    fn authorization(&self, _now: Instant) -> Result<HeaderValue, TokenError> {
        Ok(self.header.clone())
    }
}

/// How requests are authenticated: the resolved form of the token settings.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// No `Authorization` header (yuyo's "undefined" token).
    None,
    /// A strategy (a [`StaticToken`] for a plain token).
    Strategy(Arc<dyn TokenStrategy>),
}

impl Auth {
    pub(crate) fn token_type(&self) -> Option<TokenType> {
        match self {
            Self::None => None,
            Self::Strategy(strategy) => Some(strategy.token_type()),
        }
    }
}
