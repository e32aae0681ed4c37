//! Finding the application's public key through REST, once.
//!
//! yuyo's `AsgiBot` fetches the key when none is given: a bot token asks
//! `/applications/@me`, a bearer token `/oauth2/@me`, and the key is the
//! application's `verify_key`. [`KeyDiscovery`] is the single-flight state:
//! the first caller gets the request to send, the others wait for its
//! outcome.

use std::fmt;

use serde::Deserialize;

use super::auth::TokenType;
use super::error::RestError;
use super::request::{RequestBody, RestRequest};
use super::route::Route;

/// Why no public key came out of discovery.
#[derive(Clone, Debug)]
pub enum KeyDiscoveryError {
    /// The client has no token, so it cannot ask.
    NoToken,
    /// The request failed.
    Rest(RestError),
    /// The answer has no usable `verify_key` (missing, not 64 hex digits).
    InvalidVerifyKey,
}

impl fmt::Display for KeyDiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoToken => f.write_str("no public key given and no token to fetch it with"),
            Self::Rest(error) => write!(f, "fetching the public key failed: {error}"),
            Self::InvalidVerifyKey => {
                f.write_str("the application's verify_key is not 32 hex-encoded bytes")
            }
        }
    }
}

impl std::error::Error for KeyDiscoveryError {}

#[derive(Deserialize)]
struct VerifyKeyBody {
    verify_key: Option<String>,
    application: Option<Box<VerifyKeyBody>>,
}

/// The raw public key in an `/applications/@me` (`verify_key`) or
/// `/oauth2/@me` (`application.verify_key`) answer body.
///
/// # Errors
/// [`KeyDiscoveryError::InvalidVerifyKey`] when there is none, or it is not
/// 64 hex digits.
pub fn verify_key_from(body: &[u8]) -> Result<[u8; 32], KeyDiscoveryError> {
    let parsed: VerifyKeyBody =
        serde_json::from_slice(body).map_err(|_| KeyDiscoveryError::InvalidVerifyKey)?;
    let hex = parsed
        .verify_key
        .or_else(|| parsed.application.and_then(|app| app.verify_key))
        .ok_or(KeyDiscoveryError::InvalidVerifyKey)?;
    decode_hex_key(&hex).ok_or(KeyDiscoveryError::InvalidVerifyKey)
}

fn decode_hex_key(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.trim().as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut key = [0_u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(key)
}

/// The request that finds the public key for a token of `token_type`.
#[must_use]
pub fn verify_key_request(token_type: TokenType) -> RestRequest<serde_json::Value> {
    let route = match token_type {
        TokenType::Bot => Route::fetch_application(),
        TokenType::Bearer => Route::fetch_authorization(),
    };
    RestRequest::new(route, RequestBody::Empty)
}

/// What a caller of [`KeyDiscovery::begin`] does.
#[derive(Debug)]
pub enum Begin {
    /// Send this request (through a [`Call`](super::Call)) and hand its
    /// outcome to [`KeyDiscovery::finish`]. Only one caller gets it.
    Fetch(RestRequest<serde_json::Value>),
    /// Another caller is fetching: wait for it to finish, then begin again.
    Wait,
    /// The key is known.
    Ready([u8; 32]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DiscoveryState {
    Idle,
    Fetching,
    Found([u8; 32]),
}

/// Single-flight public-key discovery.
#[derive(Debug)]
pub struct KeyDiscovery {
    token_type: Option<TokenType>,
    state: DiscoveryState,
}

impl KeyDiscovery {
    /// Discovery for a client authenticated with `token_type` (`None`: no token).
    #[must_use]
    pub fn new(token_type: Option<TokenType>) -> Self {
        Self {
            token_type,
            state: DiscoveryState::Idle,
        }
    }

    /// Ask for the key.
    ///
    /// # Errors
    /// [`KeyDiscoveryError::NoToken`] when there is no token to ask with.
    pub fn begin(&mut self) -> Result<Begin, KeyDiscoveryError> {
        match (self.state, self.token_type) {
            (DiscoveryState::Found(key), _) => Ok(Begin::Ready(key)),
            (DiscoveryState::Fetching, _) => Ok(Begin::Wait),
            (DiscoveryState::Idle, None) => Err(KeyDiscoveryError::NoToken),
            (DiscoveryState::Idle, Some(token_type)) => {
                self.state = DiscoveryState::Fetching;
                Ok(Begin::Fetch(verify_key_request(token_type)))
            }
        }
    }

    /// The outcome of the fetch handed out by `begin`. On failure the next
    /// `begin` fetches again.
    ///
    /// # Errors
    /// The request's failure, or an unusable `verify_key`.
    pub fn finish(
        &mut self,
        outcome: Result<super::Response<serde_json::Value>, RestError>,
    ) -> Result<[u8; 32], KeyDiscoveryError> {
        let result = outcome
            .map_err(KeyDiscoveryError::Rest)
            .and_then(|response| verify_key_from(response.body()));
        self.state = match result {
            Ok(key) => DiscoveryState::Found(key),
            Err(_) => DiscoveryState::Idle,
        };
        result
    }

    /// The fetch handed out by `begin` will not be finished (its caller was
    /// cancelled): the next `begin` fetches again.
    pub fn abandon(&mut self) {
        if self.state == DiscoveryState::Fetching {
            self.state = DiscoveryState::Idle;
        }
    }

    /// The key, once found.
    #[must_use]
    pub fn key(&self) -> Option<[u8; 32]> {
        match self.state {
            DiscoveryState::Found(key) => Some(key),
            DiscoveryState::Idle | DiscoveryState::Fetching => None,
        }
    }
}
