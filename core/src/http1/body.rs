//! Request body decoding: Content-Length and chunked framing, under the body size limit.
//!
//! Data is handed out by splitting the receive buffer, so payload bytes are never copied
//! again after they were received.

use bytes::{Bytes, BytesMut};

use super::error::PeerError;

/// Longest chunk-size line accepted, extensions included. Generous for real clients, small
/// enough that a peer cannot make us buffer much while we wait for the line's end.
const MAX_CHUNK_LINE: usize = 1024;
/// Header slots for validating chunked trailers (which are then dropped).
const MAX_TRAILER_FIELDS: usize = 32;

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete.
    End,
    /// The buffer does not hold the next piece yet.
    NeedData,
}

/// The body framing state of the request being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyDecoder {
    /// `Content-Length` framing with this many bytes still to come.
    Length { remaining: u64 },
    /// Chunked framing.
    Chunked { state: Chunk, total: u64 },
}

/// Where in the chunked grammar the decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting `chunk-size [ext] CRLF`.
    Size,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last chunk: trailer fields, then the final CRLF.
    Trailers,
}

impl BodyDecoder {
    /// Decodes the next piece from the front of `buf`.
    ///
    /// `limit` is the maximum body size; a chunked body is refused as soon as a chunk-size
    /// line would take it past the limit, before the chunk's data is read.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        limit: u64,
        max_trailers: usize,
    ) -> Result<Decoded, PeerError> {
        match self {
            Self::Length { remaining: 0 } => Ok(Decoded::End),
            Self::Length { remaining } => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedData);
                }
                let take = take_len(*remaining, buf.len());
                *remaining -= take as u64;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Self::Chunked { state, total } => loop {
                match *state {
                    Chunk::Size => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((line, size))) => {
                            if line > MAX_CHUNK_LINE {
                                return Err(PeerError::InvalidChunk);
                            }
                            let _ = buf.split_to(line);
                            let new_total = total.checked_add(size);
                            match new_total {
                                Some(t) if t <= limit => *total = t,
                                _ => return Err(PeerError::BodyTooLarge),
                            }
                            *state = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                            return Err(PeerError::InvalidChunk);
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedData),
                        Err(httparse::InvalidChunkSize) => return Err(PeerError::InvalidChunk),
                    },
                    Chunk::Data(remaining) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedData);
                        }
                        let take = take_len(remaining, buf.len());
                        let left = remaining - take as u64;
                        *state = if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        };
                        return Ok(Decoded::Data(buf.split_to(take).freeze()));
                    }
                    Chunk::DataEnd => match buf.get(..2) {
                        None if buf.first().is_none_or(|&b| b == b'\r') => {
                            return Ok(Decoded::NeedData);
                        }
                        Some([b'\r', b'\n']) => {
                            let _ = buf.split_to(2);
                            *state = Chunk::Size;
                        }
                        _ => return Err(PeerError::InvalidChunk),
                    },
                    Chunk::Trailers => {
                        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                        return match httparse::parse_headers(buf, &mut fields) {
                            Ok(httparse::Status::Complete((len, _))) if len <= max_trailers => {
                                // Trailers are validated, then dropped: nothing here may
                                // change how the request is interpreted.
                                let _ = buf.split_to(len);
                                *self = Self::Length { remaining: 0 };
                                Ok(Decoded::End)
                            }
                            Ok(httparse::Status::Complete(_)) => Err(PeerError::TrailersTooLarge),
                            Ok(httparse::Status::Partial) if buf.len() > max_trailers => {
                                Err(PeerError::TrailersTooLarge)
                            }
                            Ok(httparse::Status::Partial) => Ok(Decoded::NeedData),
                            Err(httparse::Error::TooManyHeaders) => {
                                Err(PeerError::TrailersTooLarge)
                            }
                            Err(_) => Err(PeerError::InvalidChunk),
                        };
                    }
                }
            },
        }
    }
}

/// How many of `available` buffered bytes belong to a piece with `remaining` bytes left.
fn take_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}
