//! The settings of rate limits shared by several processes of one bot through Redis
//! ([`SharedLimits`]); the limiter itself is in the `transport` feature.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Default for [`SharedLimits::timeout`]: one Redis round trip (connect, write, reply).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Default for [`SharedLimits::retry_after`]: how long Redis is left alone after it
/// failed.
pub const DEFAULT_REDIS_RETRY: Duration = Duration::from_secs(5);

/// Rate limits kept in Redis and shared by every process (replica) of one bot, on top
/// of each process's own limiter; see `RestConfigBuilder::shared_limits`.
///
/// A request goes when both the process's limiter and Redis allow it. When Redis is
/// unreachable, slower than [`timeout`](Self::timeout) or answers nonsense, the process
/// logs one warning and goes on with its own limits only, asking Redis again every
/// [`retry_after`](Self::retry_after) (and logs at info level when it answers again).
///
/// ```
/// use yuyo_core::rest::{RestConfig, SharedLimits};
///
/// let config = RestConfig::builder()
///     .token("Bot-token")
///     .shared_limits(SharedLimits::redis("redis://127.0.0.1:6379/").key_prefix("yuyo:{my-bot}"))
///     .build();
/// assert!(config.is_ok());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SharedLimits {
    url: String,
    key_prefix: Option<String>,
    timeout: Duration,
    retry_after: Duration,
}

impl fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = RedisAddress::parse(&self.url).map(|a| format!("{}:{}", a.host, a.port));
        f.debug_struct("SharedLimits")
            .field("redis", &address.ok())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl SharedLimits {
    /// Limits kept in the Redis server at `url`:
    /// `redis://[[user]:password@]host[:port][/db]` (plain TCP; port 6379 and database
    /// 0 by default). Checked by `RestConfigBuilder::build`.
    #[must_use]
    pub fn redis(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: None,
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_after: DEFAULT_REDIS_RETRY,
        }
    }

    /// Every key starts with `prefix`: one key space per bot. Defaults to
    /// `yuyo:{<digest>}`, with a SHA-256 digest of the token (never the token
    /// itself); a client with a token strategy must name its key space. Braces make
    /// it a Redis Cluster hash tag, so a bot's keys share one slot.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// The longest one Redis round trip may take (connecting included) before the
    /// request goes under the process's own limits. Default
    /// [`DEFAULT_REDIS_TIMEOUT`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long Redis is not asked after it failed. Default [`DEFAULT_REDIS_RETRY`].
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The key prefix given, if any.
    #[must_use]
    pub fn prefix(&self) -> Option<&str> {
        self.key_prefix.as_deref()
    }

    /// The round-trip deadline.
    #[must_use]
    pub fn round_trip_timeout(&self) -> Duration {
        self.timeout
    }

    /// The pause after a failure.
    #[must_use]
    pub fn retry_delay(&self) -> Duration {
        self.retry_after
    }

    /// The server's address and credentials, checked.
    pub(crate) fn address(&self) -> Result<RedisAddress, String> {
        RedisAddress::parse(&self.url)
    }

    /// With the key prefix settled: the one given, or derived from `token`.
    pub(crate) fn resolved(mut self, token: Option<&str>) -> Option<Self> {
        if self.key_prefix.is_none() {
            let token = token?;
            let digest = Sha256::digest(token.as_bytes());
            let short = hex::encode(digest.get(..8).unwrap_or(&digest[..]));
            self.key_prefix = Some(format!("yuyo:{{{short}}}"));
        }
        Some(self)
    }
}

/// Where Redis is and how to log in.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "transport"), allow(dead_code))]
pub(crate) struct RedisAddress {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: u32,
}

impl RedisAddress {
    /// Parses `redis://[[user]:password@]host[:port][/db]`; the error never holds the
    /// password.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid Redis URL ({why})");
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| invalid("only redis:// is supported"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, authority),
        };
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| invalid("credentials are not UTF-8"))
        };
        let (user, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => (
                    Some(decode(user)?).filter(|user| !user.is_empty()),
                    Some(decode(password)?),
                ),
                None => (Some(decode(credentials)?), None),
            },
        };
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => bracketed
                .split_once(']')
                .ok_or_else(|| invalid("bad host"))?,
            None => host_port.rsplit_once(':').unwrap_or((host_port, "")),
        };
        let port = match port.strip_prefix(':').unwrap_or(port) {
            "" => 6379,
            port => port.parse::<u16>().map_err(|_| invalid("bad port"))?,
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let db = if path.is_empty() {
            0
        } else {
            path.parse().map_err(|_| invalid("bad database number"))?
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_are_parsed() {
        let a = RedisAddress::parse("redis://127.0.0.1:6390/").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("127.0.0.1", 6390, 0));
        assert!(a.password.is_none() && a.user.is_none());
        let a = RedisAddress::parse("redis://:p%40ss@redis.internal/3").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("redis.internal", 6379, 3));
        assert_eq!(a.password.as_deref(), Some("p@ss"));
        let a = RedisAddress::parse("redis://bot:secret@[::1]:7000").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 7000));
        assert_eq!(a.user.as_deref(), Some("bot"));
        assert_eq!(RedisAddress::parse("redis://[::1]").unwrap().port, 6379);
        for bad in ["http://x", "redis://", "redis://h:port", "redis://h/x"] {
            assert!(RedisAddress::parse(bad).is_err(), "{bad}");
        }
        let Err(error) = RedisAddress::parse("redis://:hunter2@h:x") else {
            panic!("a port that is not a number is refused");
        };
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn the_default_prefix_is_a_digest_of_the_token() {
        let limits = SharedLimits::redis("redis://h")
            .resolved(Some("tok"))
            .unwrap();
        let prefix = limits.prefix().unwrap();
        assert!(
            prefix.starts_with("yuyo:{") && prefix.ends_with('}'),
            "{prefix}"
        );
        assert!(!prefix.contains("tok"));
        assert!(SharedLimits::redis("redis://h").resolved(None).is_none());
        let named = SharedLimits::redis("redis://h")
            .key_prefix("p")
            .resolved(None);
        assert_eq!(named.unwrap().prefix(), Some("p"));
        assert!(!format!("{:?}", SharedLimits::redis("redis://:pw@h")).contains("pw"));
    }
}
