//! The core's rules for the fields of a request head, on a head another HTTP/1.1
//! implementation already parsed; see [`check_parsed_head`].

use http::header;
use http::{HeaderMap, Version};

use super::PeerError;

/// Applies the core's head rules that a parsed head still needs checking for, to a head
/// another HTTP/1.1 implementation parsed (yuyo-tower under hyper, which checks neither):
/// one valid `Host` (required from HTTP/1.1 peers), at most one transfer coding and
/// only `chunked`, and no expectation but `100-continue`. The error is what the core
/// answers ([`PeerError::status`], [`PeerError::message`]).
///
/// # Errors
/// The [`PeerError`] the core's own parser reports for the same head.
pub fn check_parsed_head(version: Version, headers: &HeaderMap) -> Result<(), PeerError> {
    host(version, headers)?;
    transfer_coding(headers)?;
    expectation(headers)
}

/// One valid `Host`, required from HTTP/1.1 peers (RFC 9112 §3.2); an empty one is what a
/// client sends for a target without authority.
fn host(version: Version, headers: &HeaderMap) -> Result<(), PeerError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => Err(PeerError::MissingHost),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(PeerError::MultipleHosts),
        (Some(host), None) => {
            if host.is_empty() || http::uri::Authority::try_from(host.as_bytes()).is_ok() {
                Ok(())
            } else {
                Err(PeerError::InvalidHost)
            }
        }
    }
}

/// Exactly one coding, `chunked`, if any: hyper only checks that the last one is.
/// (hyper itself refuses `Transfer-Encoding` from HTTP/1.0 peers.)
fn transfer_coding(headers: &HeaderMap) -> Result<(), PeerError> {
    let mut codings = 0_usize;
    for token in tokens(headers, header::TRANSFER_ENCODING) {
        if !token.eq_ignore_ascii_case(b"chunked") {
            return Err(PeerError::UnsupportedTransferCoding);
        }
        codings += 1;
    }
    match codings {
        0 if headers.contains_key(header::TRANSFER_ENCODING) => {
            Err(PeerError::InvalidTransferEncoding)
        }
        0 | 1 => Ok(()),
        _ => Err(PeerError::InvalidTransferEncoding),
    }
}

/// `100-continue` is the only expectation (hyper ignores any other).
fn expectation(headers: &HeaderMap) -> Result<(), PeerError> {
    if tokens(headers, header::EXPECT).all(|token| token.eq_ignore_ascii_case(b"100-continue")) {
        Ok(())
    } else {
        Err(PeerError::UnsupportedExpectation)
    }
}

/// The comma-separated, non-empty tokens of every `name` field.
fn tokens(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_parsers_verdicts_on_a_parsed_head() {
        let v11 = Version::HTTP_11;
        assert_eq!(check_parsed_head(v11, &headers(&[("host", "x")])), Ok(()));
        assert_eq!(check_parsed_head(Version::HTTP_10, &headers(&[])), Ok(()));
        assert_eq!(
            check_parsed_head(v11, &headers(&[])),
            Err(PeerError::MissingHost)
        );
        assert_eq!(
            check_parsed_head(v11, &headers(&[("host", "a"), ("host", "b")])),
            Err(PeerError::MultipleHosts)
        );
        assert_eq!(
            check_parsed_head(
                v11,
                &headers(&[("host", "x"), ("transfer-encoding", "gzip, chunked")])
            ),
            Err(PeerError::UnsupportedTransferCoding)
        );
        assert_eq!(
            check_parsed_head(
                v11,
                &headers(&[("host", "x"), ("transfer-encoding", "chunked, chunked")])
            ),
            Err(PeerError::InvalidTransferEncoding)
        );
        assert_eq!(
            check_parsed_head(v11, &headers(&[("host", "x"), ("expect", "later")])),
            Err(PeerError::UnsupportedExpectation)
        );
    }
}
