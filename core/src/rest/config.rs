//! Client settings: where Discord is, who we are, how long to wait and how
//! often to retry.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};

use super::auth::{Auth, StaticToken, TokenError, TokenStrategy, TokenType};
use super::shared_limits::SharedLimits;

/// Discord's REST API, version 10: the default base URL.
pub const DEFAULT_REST_URL: &str = "https://discord.com/api/v10";

/// Default for [`RestConfigBuilder::max_rate_limit`]: five minutes, as in yuyo.
pub const DEFAULT_MAX_RATE_LIMIT: Duration = Duration::from_secs(300);

/// Default for [`RestConfigBuilder::max_retries`], as in yuyo.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Default for [`RestConfigBuilder::global_limit`]: Discord's documented
/// 50 requests per second per bot.
pub const DEFAULT_GLOBAL_LIMIT: u32 = 50;

/// Default for [`RestConfigBuilder::in_flight_timeout`].
pub const DEFAULT_IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `User-Agent` Discord asks bots to send: `DiscordBot (url, version)`.
pub const USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/yuyo-rs/yuyo, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// Retry delays after a 5xx answer or a transport failure: exponential
/// (`base`, `2·base`, `4·base`, … capped at `max`), plus optional jitter.
///
/// Jitter is deterministic: derived from `jitter_seed` and the call, so tests
/// and replays see the same delays. Without a seed there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay (jitter included).
    pub max: Duration,
    /// Adds up to one `base` of jitter per delay when set.
    pub jitter_seed: Option<u64>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(16),
            jitter_seed: None,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry) of the
    /// call with jitter salt `salt`.
    #[must_use]
    pub fn delay(&self, retry: u32, salt: u64) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let delay = self.base.saturating_mul(1_u32 << exponent);
        let jitter = match self.jitter_seed {
            None => Duration::ZERO,
            Some(seed) => {
                let bits = splitmix64(seed ^ splitmix64(salt ^ u64::from(retry)));
                // The top 53 bits as a fraction in [0, 1).
                #[allow(clippy::cast_precision_loss)]
                let fraction = (bits >> 11) as f64 / (1_u64 << 53) as f64;
                self.base.mul_f64(fraction)
            }
        };
        delay.saturating_add(jitter).min(self.max)
    }
}

/// SplitMix64's finaliser: a tiny deterministic mixer for jitter.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A setting that cannot be used; returned by [`RestConfigBuilder::build`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Both a token strategy and a token type were given (yuyo's
    /// `ValueError`): a strategy knows its own type.
    TokenTypeWithStrategy,
    /// Both a token string and a token strategy were given.
    TokenAndStrategy,
    /// A token type was given without a token.
    TokenTypeWithoutToken,
    /// The token cannot be carried in a header.
    Token(TokenError),
    /// `rest_url` is not an absolute `http`/`https` URL without a query.
    InvalidRestUrl(String),
    /// The Redis URL of [`SharedLimits`] cannot be used (why; never the password).
    InvalidRedisUrl(String),
    /// [`SharedLimits`] without a key prefix on a client with no static token to
    /// derive one from.
    SharedLimitsNeedKeyPrefix,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenTypeWithStrategy => {
                f.write_str("a token type cannot be given with a token strategy")
            }
            Self::TokenAndStrategy => f.write_str("give either a token or a token strategy"),
            Self::TokenTypeWithoutToken => f.write_str("a token type was given without a token"),
            Self::Token(error) => write!(f, "invalid token: {error}"),
            Self::InvalidRestUrl(url) => write!(f, "invalid rest_url {url:?}"),
            Self::InvalidRedisUrl(why) => f.write_str(why),
            Self::SharedLimitsNeedKeyPrefix => {
                f.write_str("shared limits need a key prefix with a token strategy")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The settings of a REST client, built with [`RestConfig::builder`].
///
/// Cheap to clone (the token strategy is shared). `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct RestConfig {
    pub(crate) rest_url: String,
    pub(crate) auth: Auth,
    pub(crate) max_rate_limit: Option<Duration>,
    pub(crate) max_retries: u32,
    pub(crate) global_limit: Option<NonZeroU32>,
    pub(crate) backoff: Backoff,
    pub(crate) in_flight_timeout: Duration,
    pub(crate) user_agent: HeaderValue,
    pub(crate) shared_limits: Option<SharedLimits>,
}

impl RestConfig {
    /// A builder with the defaults: no token, [`DEFAULT_REST_URL`],
    /// [`DEFAULT_MAX_RATE_LIMIT`], [`DEFAULT_MAX_RETRIES`],
    /// [`DEFAULT_GLOBAL_LIMIT`] per second, [`Backoff::default`].
    #[must_use]
    pub fn builder() -> RestConfigBuilder {
        RestConfigBuilder::default()
    }

    /// The base URL routes are appended to (no trailing `/`).
    #[must_use]
    pub fn rest_url(&self) -> &str {
        &self.rest_url
    }

    /// The token type, or `None` when requests are unauthenticated.
    #[must_use]
    pub fn token_type(&self) -> Option<TokenType> {
        self.auth.token_type()
    }

    /// The longest rate-limit wait accepted; `None` for no limit.
    #[must_use]
    pub fn max_rate_limit(&self) -> Option<Duration> {
        self.max_rate_limit
    }

    /// How many times a request is retried after a 5xx or transport failure.
    #[must_use]
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Requests per second allowed by the local global limiter; `None` = off.
    #[must_use]
    pub fn global_limit(&self) -> Option<NonZeroU32> {
        self.global_limit
    }

    /// The retry delays.
    #[must_use]
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// How long a sent request may stay unanswered before the rate limiter
    /// stops waiting for it (see [`RestConfigBuilder::in_flight_timeout`]).
    #[must_use]
    pub fn in_flight_timeout(&self) -> Duration {
        self.in_flight_timeout
    }

    /// The `User-Agent` header value.
    #[must_use]
    pub fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// The rate limits shared through Redis, if on (key prefix settled).
    #[must_use]
    pub fn shared_limits(&self) -> Option<&SharedLimits> {
        self.shared_limits.as_ref()
    }
}

/// A token string with a `Debug` that never shows it.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Builds a [`RestConfig`]; mirrors the REST parameters of yuyo's `AsgiBot`.
#[derive(Clone, Debug)]
pub struct RestConfigBuilder {
    token: Option<Secret>,
    token_type: Option<TokenType>,
    strategy: Option<Arc<dyn TokenStrategy>>,
    rest_url: Option<String>,
    max_rate_limit: Option<Duration>,
    max_retries: u32,
    global_limit: Option<NonZeroU32>,
    backoff: Backoff,
    in_flight_timeout: Duration,
    shared_limits: Option<SharedLimits>,
}

impl Default for RestConfigBuilder {
    fn default() -> Self {
        Self {
            token: None,
            token_type: None,
            strategy: None,
            rest_url: None,
            max_rate_limit: Some(DEFAULT_MAX_RATE_LIMIT),
            max_retries: DEFAULT_MAX_RETRIES,
            global_limit: NonZeroU32::new(DEFAULT_GLOBAL_LIMIT),
            backoff: Backoff::default(),
            in_flight_timeout: DEFAULT_IN_FLIGHT_TIMEOUT,
            shared_limits: None,
        }
    }
}

impl RestConfigBuilder {
    /// Authenticate with `token` (type [`TokenType::Bot`] unless
    /// [`token_type`](Self::token_type) says otherwise).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// The type of the token given to [`token`](Self::token). Giving it with a
    /// strategy is an error at [`build`](Self::build), as in yuyo.
    #[must_use]
    pub fn token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = Some(token_type);
        self
    }

    /// Authenticate through a strategy instead of a fixed token.
    #[must_use]
    pub fn token_strategy(mut self, strategy: Arc<dyn TokenStrategy>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Send requests to `url` instead of [`DEFAULT_REST_URL`] (a mock, a
    /// proxy to Discord). A trailing `/` is ignored.
    #[must_use]
    pub fn rest_url(mut self, url: impl Into<String>) -> Self {
        self.rest_url = Some(url.into());
        self
    }

    /// Fail with [`RestError::RateLimitTooLong`](super::RestError) instead of
    /// waiting longer than this; `None` waits however long Discord asks
    /// (yuyo's `float("inf")`).
    #[must_use]
    pub fn max_rate_limit(mut self, max: Option<Duration>) -> Self {
        self.max_rate_limit = max;
        self
    }

    /// Retry a request this many times after 5xx answers or transport failures.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Allow at most this many non-exempt requests in any one-second span;
    /// `None` turns the local global limiter off (Discord's 429s still apply).
    #[must_use]
    pub fn global_limit(mut self, per_second: Option<NonZeroU32>) -> Self {
        self.global_limit = per_second;
        self
    }

    /// The retry delays.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A request that learns a rate-limit bucket holds back the other
    /// requests of that bucket until it is answered; after this long without
    /// an answer (a call dropped by its driver) it stops holding them back.
    /// Should exceed the adapter's request timeout.
    #[must_use]
    pub fn in_flight_timeout(mut self, timeout: Duration) -> Self {
        self.in_flight_timeout = timeout;
        self
    }

    /// Share the bot's rate limits with its other processes through Redis (see
    /// [`SharedLimits`]); off by default (each process limits itself alone).
    #[must_use]
    pub fn shared_limits(mut self, limits: SharedLimits) -> Self {
        self.shared_limits = Some(limits);
        self
    }

    /// Check the settings and build the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] for contradictory token settings, a token a header
    /// cannot carry, or an unusable `rest_url`.
    pub fn build(self) -> Result<RestConfig, ConfigError> {
        let shared_limits = match self.shared_limits {
            None => None,
            Some(limits) => {
                limits.address().map_err(ConfigError::InvalidRedisUrl)?;
                let token = self.token.as_ref().map(|Secret(token)| token.as_str());
                Some(
                    limits
                        .resolved(token)
                        .ok_or(ConfigError::SharedLimitsNeedKeyPrefix)?,
                )
            }
        };
        let auth = match (self.token, self.strategy, self.token_type) {
            (Some(_), Some(_), _) => return Err(ConfigError::TokenAndStrategy),
            (None, Some(_), Some(_)) => return Err(ConfigError::TokenTypeWithStrategy),
            (None, None, Some(_)) => return Err(ConfigError::TokenTypeWithoutToken),
            (None, Some(strategy), None) => Auth::Strategy(strategy),
            (Some(Secret(token)), None, token_type) => {
                let token = StaticToken::new(&token, token_type.unwrap_or_default())
                    .map_err(ConfigError::Token)?;
                Auth::Strategy(Arc::new(token))
            }
            (None, None, None) => Auth::None,
        };
        let rest_url = self.rest_url.unwrap_or_else(|| DEFAULT_REST_URL.to_owned());
        let trimmed = rest_url.trim_end_matches('/').to_owned();
        let usable = trimmed.parse::<Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri.query().is_none()
        });
        if !usable {
            return Err(ConfigError::InvalidRestUrl(rest_url));
        }
        Ok(RestConfig {
            rest_url: trimmed,
            auth,
            max_rate_limit: self.max_rate_limit,
            max_retries: self.max_retries,
            global_limit: self.global_limit,
            backoff: self.backoff,
            in_flight_timeout: self.in_flight_timeout,
            user_agent: HeaderValue::from_static(USER_AGENT),
            shared_limits,
        })
    }
}
