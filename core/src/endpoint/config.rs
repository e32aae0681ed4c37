//! Endpoint configuration and the Ed25519 request verifier.

use std::fmt;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use super::signature::PublicKey;

/// Default for [`EndpointConfig::max_body_size`]: 1 MiB, as in yuyo's `AsgiAdapter`.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

/// Where health checks are answered unless configured otherwise
/// ([`EndpointConfig::health_path`]).
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";

/// How an endpoint is set up: where it listens, how much it reads, and whose
/// signatures it trusts.
///
/// Built in builder style from a [`Verifier`]:
///
/// ```
/// # use yuyo_core::endpoint::{EndpointConfig, Verifier};
/// # use std::time::Duration;
/// let verifier = Verifier::from_hex(
///     "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
/// )?;
/// let config = EndpointConfig::new(verifier)
///     .path("/interactions")
///     .max_body_size(512 * 1024)
///     .timestamp_window(Duration::from_secs(300));
/// # Ok::<(), yuyo_core::endpoint::KeyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub(crate) path: String,
    pub(crate) events_path: Option<String>,
    pub(crate) health_path: Option<String>,
    pub(crate) max_body_size: usize,
    pub(crate) verifier: Verifier,
    pub(crate) timestamp_window: Option<Duration>,
}

impl EndpointConfig {
    /// A configuration with the defaults: path `/`, a 1 MiB body limit and no
    /// timestamp window.
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self {
            path: "/".to_owned(),
            events_path: None,
            health_path: Some(DEFAULT_HEALTH_PATH.to_owned()),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            verifier,
            timestamp_window: None,
        }
    }

    /// Serve interactions at `path` (compared with the request's path exactly;
    /// the query string is ignored).
    ///
    /// A leading `/` is added when missing, and anything from a `?` on is
    /// dropped, because request paths always start with `/` and never contain
    /// the query: such a path could otherwise never match.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = normalise_path(path.into());
        self
    }

    /// Serve Discord's Webhook Events at `path` too. By default there is no events
    /// path: every path but [`path`](Self::path) gets 404.
    ///
    /// Off by default because a Webhook Events URL is something a bot opts into in the
    /// developer portal, and an endpoint should not accept signed traffic at a URL its
    /// owner never configured. The path is normalised like [`path`](Self::path), must
    /// differ from it (if they are equal, interactions win) and gets exactly the same
    /// checks and signature verification (same key, body limit and timestamp window).
    /// Events go to the endpoint's [`EventHandlers`]; a PING (type 0) is answered with
    /// 204 and every event is acknowledged with 204 before its handler runs.
    ///
    /// [`EventHandlers`]: super::EventHandlers
    #[must_use]
    pub fn events_path(mut self, path: impl Into<String>) -> Self {
        self.events_path = Some(normalise_path(path.into()));
        self
    }

    /// Answer load balancers' health checks at `path` (default [`DEFAULT_HEALTH_PATH`]):
    /// `GET` gets 200 `ok` while the server serves and 503 `draining` once its shutdown
    /// began (see [`Health`](super::Health)), so a balancer stops routing to a replica
    /// before it stops accepting. Normalised like [`path`](Self::path); if it equals the
    /// interactions or events path, those win. Unsigned, and tells nothing but the state.
    #[must_use]
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = Some(normalise_path(path.into()));
        self
    }

    /// Serve no health check: its path gets 404 like any other.
    #[must_use]
    pub fn without_health_check(mut self) -> Self {
        self.health_path = None;
        self
    }

    /// Reject bodies larger than `bytes` with 413, before buffering them.
    #[must_use]
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Reject (401) requests whose `X-Signature-Timestamp` is not a Unix time
    /// within `window` of the `now` passed to [`Exchange::finish`], as a replay
    /// defence. Off by default, because Discord does not require it and a
    /// skewed server clock would then reject every request.
    ///
    /// Five minutes (`Duration::from_secs(300)`, Stripe's and Slack's window for
    /// their signed webhooks) is a good choice on a host whose clock is synced
    /// (NTP).
    ///
    /// The window is symmetric and has a resolution of whole seconds. It is
    /// checked only after the signature verifies, so a forged request gets the
    /// same 401 whatever its timestamp and costs a debug line; an authentic
    /// request outside the window (a replay, or this host's clock is off) is
    /// logged as a `warn`, at most once a minute per endpoint.
    ///
    /// [`Exchange::finish`]: super::Exchange::finish
    #[must_use]
    pub fn timestamp_window(mut self, window: Duration) -> Self {
        self.timestamp_window = Some(window);
        self
    }

    /// The path interactions are served at.
    #[must_use]
    pub fn get_path(&self) -> &str {
        &self.path
    }

    /// The path Webhook Events are served at, if any.
    #[must_use]
    pub fn get_events_path(&self) -> Option<&str> {
        self.events_path.as_deref()
    }

    /// The path health checks are answered at, if any.
    #[must_use]
    pub fn get_health_path(&self) -> Option<&str> {
        self.health_path.as_deref()
    }

    /// The body size limit in bytes.
    #[must_use]
    pub fn get_max_body_size(&self) -> usize {
        self.max_body_size
    }

    /// The timestamp window, if one is configured.
    #[must_use]
    pub fn get_timestamp_window(&self) -> Option<Duration> {
        self.timestamp_window
    }

    /// The verifier requests are checked with.
    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

/// A leading `/` is added when missing, and anything from a `?` on is dropped, because
/// request paths always start with `/` and never contain the query.
fn normalise_path(mut path: String) -> String {
    if let Some(query) = path.find('?') {
        path.truncate(query);
    }
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    path
}

/// Why a public key could not be turned into a [`Verifier`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The hex string contains a character that is not a hex digit.
    InvalidHex,
    /// The key is not 32 bytes (64 hex digits) long; holds the byte length found
    /// (for hex input: half the number of digits, rounded down).
    WrongLength(usize),
    /// The 32 bytes are not the encoding of a point on Curve25519.
    InvalidPoint,
    /// The point has small order: every signature would fail strict
    /// verification, so this is never a real application's key.
    WeakKey,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidHex => f.write_str("public key is not valid hexadecimal"),
            Self::WrongLength(len) => {
                write!(f, "public key must be 32 bytes long, got {len}")
            }
            Self::InvalidPoint => f.write_str("public key is not a valid Ed25519 point"),
            Self::WeakKey => f.write_str("public key is a weak (small-order) Ed25519 point"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The signature on a request did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidSignature;

impl fmt::Display for InvalidSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid request signature")
    }
}

impl std::error::Error for InvalidSignature {}

/// Checks Discord's Ed25519 request signatures against an application's public
/// key, strictly: exactly what ed25519-dalek's `verify_strict` accepts (it rejects
/// malleable and small-order signatures), computed with less work.
#[derive(Clone, Debug)]
pub struct Verifier {
    mode: VerifierMode,
}

#[derive(Clone, Debug)]
enum VerifierMode {
    Key(PublicKey),
    /// Lets fuzzers past the cryptography; only exists with the `fuzzing` feature.
    #[cfg(feature = "fuzzing")]
    AcceptAll,
}

impl Verifier {
    /// A verifier for the raw 32-byte public key.
    ///
    /// # Errors
    /// [`KeyError::InvalidPoint`] or [`KeyError::WeakKey`] when the bytes are
    /// not a usable Ed25519 public key.
    pub fn from_bytes(key: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(key).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self {
            mode: VerifierMode::Key(PublicKey::new(key)),
        })
    }

    /// A verifier for the public key as shown in Discord's developer portal:
    /// 64 hex digits, either case (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`KeyError::WrongLength`] / [`KeyError::InvalidHex`] for malformed hex,
    /// otherwise as [`Verifier::from_bytes`].
    pub fn from_hex(key: &str) -> Result<Self, KeyError> {
        let key = key.trim();
        if key.len() != 64 {
            return Err(KeyError::WrongLength(key.len() / 2));
        }
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(key, &mut bytes).map_err(|_| KeyError::InvalidHex)?;
        Self::from_bytes(&bytes)
    }

    /// A verifier that accepts **every** signature, so fuzzers can reach the
    /// JSON and dispatch logic behind the cryptography.
    ///
    /// Only exists with the `fuzzing` cargo feature, which must never be
    /// enabled in a build that serves traffic.
    #[cfg(feature = "fuzzing")]
    #[must_use]
    pub fn insecure_accept_all() -> Self {
        Self {
            mode: VerifierMode::AcceptAll,
        }
    }

    /// The public key, unless this is the fuzzing verifier.
    #[must_use]
    pub fn verifying_key(&self) -> Option<&VerifyingKey> {
        match &self.mode {
            VerifierMode::Key(key) => Some(key.verifying()),
            #[cfg(feature = "fuzzing")]
            VerifierMode::AcceptAll => None,
        }
    }

    /// The key with its precomputed points, unless this is the fuzzing verifier.
    pub(super) fn public_key(&self) -> Option<&PublicKey> {
        match &self.mode {
            VerifierMode::Key(key) => Some(key),
            #[cfg(feature = "fuzzing")]
            VerifierMode::AcceptAll => None,
        }
    }

    /// Verify `signature` over `message` (`timestamp ‖ body`).
    ///
    /// # Errors
    /// [`InvalidSignature`] when the signature does not verify strictly.
    pub fn verify_message(
        &self,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), InvalidSignature> {
        self.verify_parts(&[message], signature)
    }

    /// Verify `signature` over `timestamp ‖ body`, hashed in place (no copy).
    ///
    /// # Errors
    /// [`InvalidSignature`] when the signature does not verify strictly.
    pub fn verify(
        &self,
        timestamp: &[u8],
        body: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), InvalidSignature> {
        self.verify_parts(&[timestamp, body], signature)
    }

    fn verify_parts(
        &self,
        message: &[&[u8]],
        signature: &[u8; 64],
    ) -> Result<(), InvalidSignature> {
        match &self.mode {
            VerifierMode::Key(key) => key
                .verifies(signature, message)
                .then_some(())
                .ok_or(InvalidSignature),
            #[cfg(feature = "fuzzing")]
            VerifierMode::AcceptAll => Ok(()),
        }
    }
}
