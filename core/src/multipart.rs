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
//! The boundary is `yuyo-` followed by 32 hex digits: 128 bits drawn from the
//! operating system's random number generator (`getrandom`) for every body, so
//! nobody can predict it from the content. It is checked against every
//! in-memory byte of the body (headers, JSON, in-memory files) and drawn again
//! on a clash. Files the driver supplies later (streamed from disk, say) cannot
//! be scanned, and their bytes may be chosen by a peer; but a peer can forge a
//! part only by guessing a secret 128-bit value it never sees (the boundary
//! travels in the request's `Content-Type`, to Discord over TLS), so a file
//! holds it only by a 2⁻¹²⁸-per-position accident.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// What every boundary starts with, before its 32 random hex digits.
const BOUNDARY_PREFIX: &str = "yuyo-";

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

/// A random boundary that occurs in no in-memory content; see the module docs.
fn choose_boundary(payload_json: &[u8], files: &[FilePart], heads: &[String]) -> String {
    choose_boundary_from(payload_json, files, heads, random_bits)
}

/// The first boundary made from `draw`'s bits that occurs in no in-memory
/// content (`draw` is the OS RNG outside tests).
fn choose_boundary_from(
    payload_json: &[u8],
    files: &[FilePart],
    heads: &[String],
    mut draw: impl FnMut() -> [u8; 16],
) -> String {
    loop {
        let candidate = boundary_from(draw());
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
        // Finite content holds finitely many candidates, and a fresh draw
        // hits one only by accident: this ends, almost always at once.
    }
}

/// `yuyo-` and the 32 lowercase hex digits of `bits`.
fn boundary_from(bits: [u8; 16]) -> String {
    let mut boundary = String::with_capacity(BOUNDARY_PREFIX.len() + 32);
    boundary.push_str(BOUNDARY_PREFIX);
    boundary.push_str(&hex::encode(bits));
    boundary
}

/// 128 bits from the OS RNG. Should the OS refuse (a sandbox that blocks it),
/// falls back to [`fallback_bits`] rather than failing the reply.
fn random_bits() -> [u8; 16] {
    let mut bits = [0_u8; 16];
    match getrandom::fill(&mut bits) {
        Ok(()) => bits,
        Err(error) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "OS random number generator unavailable; multipart boundaries fall back to std's hash keys");
            }
            fallback_bits()
        }
    }
}

/// 128 bits of SipHash over a counter, keyed with std's per-thread hash keys
/// (drawn from the OS when the thread first needed them, so usually before the
/// OS refused): unpredictable to anyone who does not know those keys.
fn fallback_bits() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let mut bits = [0_u8; 16];
    for half in bits.chunks_exact_mut(8) {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bits
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A boundary is `yuyo-` and 32 lowercase hex digits.
    fn well_formed(boundary: &str) -> bool {
        boundary
            .strip_prefix(BOUNDARY_PREFIX)
            .is_some_and(|digits| {
                digits.len() == 32
                    && digits
                        .bytes()
                        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
            })
    }

    #[test]
    fn boundary_avoids_in_memory_content() {
        // The first draw occurs in an in-memory file, so the second is taken.
        let first = boundary_from([0x11; 16]);
        let mut hostile = vec![b'a'; 1024];
        hostile[500..500 + first.len()].copy_from_slice(first.as_bytes());
        let files = vec![FilePart::memory("a.bin", hostile)];
        let mut draws = [[0x11; 16], [0x22; 16]].into_iter();
        let chosen =
            choose_boundary_from(b"{}", &files, &[], || draws.next().unwrap_or([0x33; 16]));
        assert_eq!(chosen, boundary_from([0x22; 16]));
        // The payload and the part heads are checked too.
        let mut draws = [[0x11; 16], [0x44; 16]].into_iter();
        let chosen = choose_boundary_from(first.as_bytes(), &[], &[], || {
            draws.next().unwrap_or([0x33; 16])
        });
        assert_eq!(chosen, boundary_from([0x44; 16]));
        let mut draws = [[0x11; 16], [0x55; 16]].into_iter();
        let chosen = choose_boundary_from(b"{}", &[], std::slice::from_ref(&first), || {
            draws.next().unwrap_or([0x33; 16])
        });
        assert_eq!(chosen, boundary_from([0x55; 16]));
    }

    /// The boundary is random, not derived from the content: the same body
    /// encoded twice gets two boundaries, so whoever chooses a streamed file's
    /// bytes cannot compute the boundary to forge parts with.
    #[test]
    fn boundary_is_random_per_body() {
        let encode = || {
            MultipartBody::encode(
                Bytes::from_static(b"{}"),
                vec![FilePart::source(
                    "upload.bin",
                    FileSource::Later { id: 0, len: None },
                )],
            )
        };
        let (one, two) = (encode(), encode());
        assert!(well_formed(one.boundary()), "{}", one.boundary());
        assert!(well_formed(two.boundary()), "{}", two.boundary());
        assert_ne!(one.boundary(), two.boundary());
    }

    #[test]
    fn bits_are_fresh_on_each_draw() {
        assert_ne!(random_bits(), random_bits());
        assert_ne!(fallback_bits(), fallback_bits());
        assert!(well_formed(&boundary_from(fallback_bits())));
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
