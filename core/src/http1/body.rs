//! Request body decoding: Content-Length and chunked framing, under the body size limit.
//!
//! Data is handed out by splitting the receive buffer, so payload bytes are never copied
//! again after they were received.

use bytes::{Bytes, BytesMut};

use super::error::PeerError;
use super::head::bare_lf;

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
                    Chunk::Size => match chunk_line(buf)? {
                        Some((line, size)) => {
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
                        None => return Ok(Decoded::NeedData),
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
                    Chunk::Trailers => return decode_trailers(self, buf, max_trailers),
                }
            },
        }
    }
}

/// The trailer section after the last chunk: validated, then dropped (nothing in it
/// may change how the request is interpreted), which ends the body.
fn decode_trailers(
    decoder: &mut BodyDecoder,
    buf: &mut BytesMut,
    max_trailers: usize,
) -> Result<Decoded, PeerError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    match httparse::parse_headers(buf, &mut fields) {
        // httparse takes a bare LF as a line end; RFC 9112 §2.2 lets us refuse it, and
        // a proxy that reads lines differently would see another message.
        Ok(httparse::Status::Complete((len, _))) if bare_lf(&buf[..len]).is_some() => {
            Err(PeerError::InvalidChunk)
        }
        Ok(httparse::Status::Complete((len, _))) if len <= max_trailers => {
            let _ = buf.split_to(len);
            *decoder = BodyDecoder::Length { remaining: 0 };
            Ok(Decoded::End)
        }
        Ok(httparse::Status::Complete(_)) => Err(PeerError::TrailersTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > max_trailers => {
            Err(PeerError::TrailersTooLarge)
        }
        // Everything buffered belongs to the trailers, so a bare LF is final already.
        Ok(httparse::Status::Partial) if bare_lf(buf).is_some() => Err(PeerError::InvalidChunk),
        Ok(httparse::Status::Partial) => Ok(Decoded::NeedData),
        Err(httparse::Error::TooManyHeaders) => Err(PeerError::TrailersTooLarge),
        Err(_) => Err(PeerError::InvalidChunk),
    }
}

/// A complete `chunk-size [chunk-ext] CRLF` line at the front of `buf`: its length and
/// the size, or `None` while it is incomplete.
///
/// Stricter than `httparse::parse_chunk_size`, which takes an empty size (`\r\n`,
/// `;ext\r\n`) as 0, the last chunk, and any byte, bare LF included, inside an
/// extension. RFC 9112 §7.1 requires at least one hex digit and allows no control
/// character but HTAB in an extension; being lax there lets a peer end a body early
/// where a proxy in front of us would not (request smuggling).
fn chunk_line(buf: &[u8]) -> Result<Option<(usize, u64)>, PeerError> {
    // Refused as soon as the first byte shows there is no size: whatever follows.
    if buf.first().is_some_and(|byte| !byte.is_ascii_hexdigit()) {
        return Err(PeerError::InvalidChunk);
    }
    let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let Some(lf) = window.iter().position(|&byte| byte == b'\n') else {
        return if buf.len() >= MAX_CHUNK_LINE {
            Err(PeerError::InvalidChunk)
        } else {
            Ok(None)
        };
    };
    let content = match lf.checked_sub(1).map(|cr| (cr, window[cr])) {
        Some((cr, b'\r')) => &window[..cr],
        // A bare LF.
        _ => return Err(PeerError::InvalidChunk),
    };
    if content
        .iter()
        .any(|&byte| byte != b'\t' && (byte < b' ' || byte == 0x7f))
    {
        return Err(PeerError::InvalidChunk);
    }
    match httparse::parse_chunk_size(&window[..=lf]) {
        Ok(httparse::Status::Complete((line, size))) if line == lf + 1 => Ok(Some((line, size))),
        Ok(_) | Err(httparse::InvalidChunkSize) => Err(PeerError::InvalidChunk),
    }
}

/// How many of `available` buffered bytes belong to a piece with `remaining` bytes left.
fn take_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked() -> BodyDecoder {
        BodyDecoder::Chunked {
            state: Chunk::Size,
            total: 0,
        }
    }

    /// Decodes all of `input` at once: the body bytes, or the first error.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool), PeerError> {
        let mut decoder = chunked();
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match decoder.decode(&mut buf, 1 << 20, 16 * 1024)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return Ok((body, true)),
                Decoded::NeedData => return Ok((body, false)),
            }
        }
    }

    #[test]
    fn chunk_lines_that_hold_a_size_are_accepted() {
        for (line, size) in [
            (&b"5\r\n"[..], 5),
            (b"0\r\n", 0),
            (b"000\r\n", 0),
            (b"aF\r\n", 0xaf),
            (b"5;name=value\r\n", 5),
            (b"5 ;name=\"q v\"\r\n", 5),
            (b"5;a\tb\r\n", 5),
            (b"5;\xc3\xa9\r\n", 5),
        ] {
            assert_eq!(chunk_line(line), Ok(Some((line.len(), size))), "{line:?}");
        }
        // Incomplete, but could still become valid.
        for partial in [&b""[..], b"5", b"5;ab", b"5\r"] {
            assert_eq!(chunk_line(partial), Ok(None), "{partial:?}");
        }
    }

    /// httparse reads an empty size as 0, the last chunk, and lets a bare LF or any
    /// control character through inside an extension.
    #[test]
    fn chunk_lines_without_a_size_or_with_a_bare_lf_are_refused() {
        for line in [
            &b"\r\n"[..],
            b";x\r\n",
            b";\r\n",
            b" 5\r\n",
            b"\t\r\n",
            b"\n",
            b"5\n",
            b"5;a\nb\r\n",
            b"5;a\n",
            b"5;a\x00\r\n",
            b"5;a\x7f\r\n",
            b"5;a\rb\r\n",
            b"g\r\n",
        ] {
            assert_eq!(chunk_line(line), Err(PeerError::InvalidChunk), "{line:?}");
        }
        // No size: refused from the first byte on, before the line is complete.
        for partial in [&b"\r"[..], b";", b" "] {
            assert_eq!(
                chunk_line(partial),
                Err(PeerError::InvalidChunk),
                "{partial:?}"
            );
        }
    }

    #[test]
    fn empty_size_is_not_the_last_chunk() {
        assert_eq!(
            decode_all(b"5\r\nhello\r\n0\r\n\r\n"),
            Ok((b"hello".to_vec(), true))
        );
        for input in [
            &b"\r\n\r\n"[..],
            b";x\r\n\r\n",
            b"5\r\nhello\r\n\r\n\r\n",
            b"5\r\nhello\r\n;last\r\n\r\n",
        ] {
            assert_eq!(decode_all(input), Err(PeerError::InvalidChunk), "{input:?}");
        }
    }

    #[test]
    fn trailers_with_a_bare_lf_are_refused() {
        assert_eq!(decode_all(b"0\r\nX-T: a\r\n\r\n"), Ok((Vec::new(), true)));
        for input in [
            &b"0\r\n\n"[..],
            b"0\r\nX-T: a\n\r\n",
            b"0\r\nX-T: a\r\n\n",
            // Refused before the trailer section is complete.
            b"0\r\nX-T: a\nX-U",
        ] {
            assert_eq!(decode_all(input), Err(PeerError::InvalidChunk), "{input:?}");
        }
    }
}
