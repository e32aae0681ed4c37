//! `multipart/form-data` encoding for interaction replies with files.
//!
//! Discord takes files as a `multipart/form-data` body: a `payload_json`
//! part holding the JSON reply, then one `files[n]` part per file. The
//! encoder is sans-IO: it produces a list of [`Segment`]s, where in-memory
//! bytes (boundaries, part headers, small in-memory data) are coalesced into
//! [`Segment::Bytes`] and the contents of files the driver supplies later (for
//! example streamed from disk) are left as [`Segment::File`] placeholders.
//!
//! # The boundary
//! The boundary is derived deterministically (no RNG, no clock) from a hash of
//! the in-memory content plus a counter, and is checked against every
//! in-memory byte of the body (headers, JSON, in-memory files); on a clash the
//! counter moves on. Files supplied later cannot be scanned, so the boundary
//! carries 128 bits of hash (`yuyo-` followed by 32 hex digits): content not
//! crafted with knowledge of the in-memory parts contains it only by a
//! ~2⁻¹²⁸-per-position accident.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters of a filename kept as they are; everything else is
/// percent-encoded (like Python's `urllib.parse.quote` without `/`), which
/// keeps the quoted `filename` parameter free of quotes, CR/LF and non-ASCII.
const FILENAME_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// In-memory data up to this size is copied into the surrounding
/// [`Segment::Bytes`]; larger data keeps its own segment, sharing the caller's
/// buffer instead of copying it.
const COALESCE_LIMIT: usize = 8 * 1024;

/// Bytes of each in-memory file that feed the boundary hash (from its start
/// and from its end): enough to make the boundary depend on the content
/// without hashing megabytes.
const HASHED_FILE_EDGE: usize = 256;

/// The media type used when a file has none, or an unusable one.
pub const DEFAULT_FILE_CONTENT_TYPE: &str = "application/octet-stream";

/// Where a file's bytes come from when they are not in memory: the driver
/// supplies them while writing the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    /// A file on disk, which the driver streams.
    Path {
        /// The file to stream.
        path: PathBuf,
        /// Its size in bytes, if known (lets the response carry a
        /// `Content-Length`).
        len: Option<u64>,
    },
    /// Bytes the driver produces some other way, identified by `id` (for
    /// example an index into the driver's own table of streams).
    Later {
        /// The driver's identifier for the data.
        id: u64,
        /// Its size in bytes, if known.
        len: Option<u64>,
    },
}

impl FileSource {
    /// The size in bytes, if known.
    #[must_use]
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Self::Path { len, .. } | Self::Later { len, .. } => *len,
        }
    }
}

/// The contents of a [`FilePart`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileData {
    /// The bytes, in memory.
    Memory(Bytes),
    /// Supplied later by the driver.
    Source(FileSource),
}

impl FileData {
    /// The size in bytes, if known.
    #[must_use]
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Self::Memory(bytes) => Some(bytes.len() as u64),
            Self::Source(source) => source.known_len(),
        }
    }
}

/// A file attached to a reply: a name, an optional media type, and its
/// contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePart {
    filename: String,
    content_type: Option<String>,
    data: FileData,
}

impl FilePart {
    /// A file whose bytes are in memory.
    #[must_use]
    pub fn memory(filename: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Self::new(filename, FileData::Memory(bytes.into()))
    }

    /// A file the driver supplies while writing the body.
    #[must_use]
    pub fn source(filename: impl Into<String>, source: FileSource) -> Self {
        Self::new(filename, FileData::Source(source))
    }

    /// A file with the given contents.
    #[must_use]
    pub fn new(filename: impl Into<String>, data: FileData) -> Self {
        Self {
            filename: filename.into(),
            content_type: None,
            data,
        }
    }

    /// Set the media type (e.g. `image/png`). Without one, or when it is empty
    /// or holds characters a header cannot carry (control characters,
    /// non-ASCII), `application/octet-stream` is sent.
    #[must_use]
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// The file's name, as given (it is percent-encoded on the wire).
    #[must_use]
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// The media type as given, if any.
    #[must_use]
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The media type that goes on the wire.
    #[must_use]
    pub fn effective_content_type(&self) -> &str {
        match self.content_type.as_deref() {
            Some(content_type) if is_header_safe(content_type) => content_type,
            Some(_) | None => DEFAULT_FILE_CONTENT_TYPE,
        }
    }

    /// The contents.
    #[must_use]
    pub fn data(&self) -> &FileData {
        &self.data
    }
}

/// Non-empty, and only visible ASCII, space and tab: safe inside a header line.
fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte))
}

/// One piece of an encoded multipart body, written in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Bytes to write as they are.
    Bytes(Bytes),
    /// The contents of `files[index]`, which the driver writes from `source`.
    /// If the source has a declared length, exactly that many bytes must be
    /// written, or the response's `Content-Length` is wrong.
    File {
        /// `n` of the `files[n]` part.
        index: usize,
        /// Where the bytes come from.
        source: FileSource,
    },
}

/// An encoded `multipart/form-data` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartBody {
    boundary: String,
    segments: Vec<Segment>,
    len: Option<u64>,
}

impl MultipartBody {
    /// Encode `payload_json` (sent as the `payload_json` part, with
    /// `Content-Type: application/json`) and `files` (as `files[0]`,
    /// `files[1]`, … in order).
    #[must_use]
    pub fn encode(payload_json: Bytes, files: Vec<FilePart>) -> Self {
        let heads: Vec<String> = files
            .iter()
            .enumerate()
            .map(|(index, file)| {
                format!(
                    "Content-Disposition: form-data; name=\"files[{index}]\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                    utf8_percent_encode(&file.filename, FILENAME_KEEP),
                    file.effective_content_type(),
                )
            })
            .collect();
        let boundary = choose_boundary(&payload_json, &files, &heads);

        let mut out = SegmentWriter::default();
        out.put(b"--");
        out.put(boundary.as_bytes());
        out.put(b"\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n");
        out.put_shared(payload_json);
        for (index, (file, head)) in files.into_iter().zip(&heads).enumerate() {
            out.put(b"\r\n--");
            out.put(boundary.as_bytes());
            out.put(b"\r\n");
            out.put(head.as_bytes());
            match file.data {
                FileData::Memory(bytes) => out.put_shared(bytes),
                FileData::Source(source) => out.put_file(index, source),
            }
        }
        out.put(b"\r\n--");
        out.put(boundary.as_bytes());
        out.put(b"--\r\n");
        let (segments, len) = out.finish();
        Self {
            boundary,
            segments,
            len,
        }
    }

    /// The boundary between parts.
    #[must_use]
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The `Content-Type` header value: `multipart/form-data; boundary=…`.
    #[must_use]
    pub fn content_type(&self) -> HeaderValue {
        let value = format!("multipart/form-data; boundary={}", self.boundary);
        // The boundary is ASCII letters, digits and '-', so this cannot fail;
        // the fallback only keeps the function total.
        HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("multipart/form-data"))
    }

    /// The body's total length, known when every file's length is.
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        self.len
    }

    /// The segments to write, in order.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segments to write, in order, by value.
    #[must_use]
    pub fn into_segments(self) -> Vec<Segment> {
        self.segments
    }

    /// The whole body in one buffer, or `None` if a file is supplied later.
    #[must_use]
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self.segments.as_slice() {
            [Segment::Bytes(only)] => Some(only.clone()),
            segments => {
                let mut buf = BytesMut::new();
                for segment in segments {
                    match segment {
                        Segment::Bytes(bytes) => buf.extend_from_slice(bytes),
                        Segment::File { .. } => return None,
                    }
                }
                Some(buf.freeze())
            }
        }
    }
}

/// Accumulates segments, coalescing small in-memory pieces.
#[derive(Default)]
struct SegmentWriter {
    segments: Vec<Segment>,
    pending: BytesMut,
    len: Option<u64>,
    unknown_len: bool,
}

impl SegmentWriter {
    fn put(&mut self, bytes: &[u8]) {
        self.pending.put_slice(bytes);
    }

    fn put_shared(&mut self, bytes: Bytes) {
        if bytes.len() <= COALESCE_LIMIT {
            self.put(&bytes);
        } else {
            self.flush();
            self.add_len(bytes.len() as u64);
            self.segments.push(Segment::Bytes(bytes));
        }
    }

    fn put_file(&mut self, index: usize, source: FileSource) {
        self.flush();
        match source.known_len() {
            Some(len) => self.add_len(len),
            None => self.unknown_len = true,
        }
        self.segments.push(Segment::File { index, source });
    }

    fn add_len(&mut self, len: u64) {
        self.len = Some(self.len.unwrap_or(0).saturating_add(len));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.add_len(self.pending.len() as u64);
            self.segments
                .push(Segment::Bytes(self.pending.split().freeze()));
        }
    }

    fn finish(mut self) -> (Vec<Segment>, Option<u64>) {
        self.flush();
        let len = if self.unknown_len { None } else { self.len };
        (self.segments, len)
    }
}

/// The first boundary candidate (by counter) that occurs in no in-memory
/// content; see the module docs.
fn choose_boundary(payload_json: &[u8], files: &[FilePart], heads: &[String]) -> String {
    let mut digest = Fnv::default();
    digest.write(payload_json);
    for (file, head) in files.iter().zip(heads) {
        digest.write(head.as_bytes());
        match &file.data {
            FileData::Memory(bytes) => {
                digest.write(&(bytes.len() as u64).to_le_bytes());
                let edge = bytes.len().min(HASHED_FILE_EDGE);
                digest.write(&bytes[..edge]);
                digest.write(&bytes[bytes.len() - edge..]);
            }
            FileData::Source(source) => {
                digest.write(&source.known_len().unwrap_or(u64::MAX).to_le_bytes());
            }
        }
    }
    let digest = digest.0;

    let mut counter: u64 = 0;
    loop {
        let candidate = boundary_candidate(digest, counter);
        let needle = candidate.as_bytes();
        let clashes = contains(payload_json, needle)
            || heads.iter().any(|head| contains(head.as_bytes(), needle))
            || files.iter().any(|file| match &file.data {
                FileData::Memory(bytes) => contains(bytes, needle),
                FileData::Source(_) => false,
            });
        if !clashes {
            return candidate;
        }
        // Each counter value gives an unrelated candidate, and finite content
        // contains only finitely many of them.
        counter = counter.wrapping_add(1);
    }
}

/// `yuyo-` and 32 hex digits (128 bits) derived from `digest` and `counter`.
fn boundary_candidate(digest: u64, counter: u64) -> String {
    let high = splitmix64(digest ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let low = splitmix64(high ^ counter ^ 0xD1B5_4A32_D192_ED03);
    let mut boundary = String::with_capacity(5 + 32);
    boundary.push_str("yuyo-");
    // Writing to a String cannot fail.
    let _ = write!(boundary, "{high:016x}{low:016x}");
    boundary
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    match needle.split_first() {
        None => true,
        Some((first, rest)) => haystack
            .iter()
            .enumerate()
            .filter(|(_, byte)| *byte == first)
            .any(|(at, _)| haystack[at + 1..].starts_with(rest)),
    }
}

/// 64-bit FNV-1a: a tiny, dependency-free content hash (not cryptographic;
/// the boundary is checked against the content anyway).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// SplitMix64's finaliser: spreads the FNV state over all 64 bits.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_avoids_in_memory_content() {
        // Only a file's length and edges feed the hash, so a file whose middle
        // holds the first candidate hashes the same and forces the next one.
        let plain = vec![b'a'; 4 * HASHED_FILE_EDGE];
        let first = MultipartBody::encode(
            Bytes::from_static(b"{}"),
            vec![FilePart::memory("a.bin", plain.clone())],
        )
        .boundary;
        let mut hostile = plain;
        let middle = 2 * HASHED_FILE_EDGE - first.len() / 2;
        hostile[middle..middle + first.len()].copy_from_slice(first.as_bytes());
        let body = MultipartBody::encode(
            Bytes::from_static(b"{}"),
            vec![FilePart::memory("a.bin", hostile)],
        );
        assert_ne!(body.boundary(), first);
        let bytes = body.to_bytes().unwrap_or_default();
        assert!(contains(&bytes, first.as_bytes()));
        // The chosen boundary occurs only as delimiters: payload, file, close.
        let occurrences = bytes
            .windows(body.boundary().len())
            .filter(|window| *window == body.boundary().as_bytes())
            .count();
        assert_eq!(occurrences, 3);
    }

    #[test]
    fn contains_works() {
        assert!(contains(b"abcabd", b"abd"));
        assert!(!contains(b"abcab", b"abd"));
        assert!(contains(b"", b""));
        assert!(!contains(b"", b"a"));
    }

    #[test]
    fn unusable_content_types_fall_back() {
        for bad in ["", "text/plain\r\nX-Evil: 1", "tëxt/plain"] {
            let file = FilePart::memory("a", "b").with_content_type(bad);
            assert_eq!(file.effective_content_type(), DEFAULT_FILE_CONTENT_TYPE);
        }
        let file = FilePart::memory("a", "b").with_content_type("image/png");
        assert_eq!(file.effective_content_type(), "image/png");
    }

    #[test]
    fn unknown_length_gives_no_content_length() {
        let files = vec![
            FilePart::memory("a", "b"),
            FilePart::source("c", FileSource::Later { id: 1, len: None }),
        ];
        let body = MultipartBody::encode(Bytes::from_static(b"{}"), files);
        assert_eq!(body.content_length(), None);
        assert!(body.to_bytes().is_none());
        assert_eq!(body.segments().len(), 3);
    }

    #[test]
    fn known_lengths_add_up() {
        let files = vec![
            FilePart::memory("a", "b"),
            FilePart::source(
                "c",
                FileSource::Later {
                    id: 1,
                    len: Some(10),
                },
            ),
            FilePart::memory("big", vec![7_u8; COALESCE_LIMIT + 1]),
        ];
        let body = MultipartBody::encode(Bytes::from_static(b"{}"), files);
        let in_memory: u64 = body
            .segments()
            .iter()
            .map(|segment| match segment {
                Segment::Bytes(bytes) => bytes.len() as u64,
                Segment::File { source, .. } => source.known_len().unwrap_or(0),
            })
            .sum();
        assert_eq!(body.content_length(), Some(in_memory));
    }
}
