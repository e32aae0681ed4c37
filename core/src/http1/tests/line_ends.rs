//! Line endings and chunk-size lines: httparse is lenient (a bare LF ends a line, an empty
//! chunk size reads as 0), the connection is not.

use super::*;

const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunked(body: &[u8]) -> Vec<u8> {
    [CHUNKED, body].concat()
}

#[test]
fn bare_lf_in_the_head_is_400() {
    let request_line = PeerError::MalformedHead(HeadSyntax::RequestLine);
    let header_line = PeerError::MalformedHead(HeadSyntax::HeaderLine);
    assert_rejected(b"GET / HTTP/1.1\nHost: a\r\n\r\n", request_line, 400);
    assert_rejected(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", request_line, 400);
    assert_rejected(
        b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        request_line,
        400,
    );
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", header_line, 400);
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\n\n", header_line, 400);
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\n\n", header_line, 400);
    assert_rejected(b"GET / HTTP/1.0\n\n", request_line, 400);
}

#[test]
fn bare_lf_in_a_partial_head_is_400_at_once() {
    let mut d = Driver::new(Config::default());
    d.feed(b"GET / HTTP/1.1\nHost: a");
    assert_eq!(
        d.seen,
        vec![
            Seen::Error(PeerError::MalformedHead(HeadSyntax::RequestLine)),
            Seen::Closed
        ]
    );
}

#[test]
fn lf_in_bodies_and_an_empty_line_before_a_request_are_fine() {
    let mut d = Driver::new(Config::default());
    d.feed(b"\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\na\nb");
    d.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(d.seen[1], Seen::Data(b"a\nb".to_vec()));
    assert_eq!(d.out_str(), [OK, OK].concat());
    let mut d = Driver::new(Config::default());
    d.feed(&chunked(b"3\r\na\nb\r\n0\r\n\r\n"));
    assert_eq!(d.seen[1], Seen::Data(b"a\nb".to_vec()));
    assert_eq!(d.out_str(), OK);
}

/// httparse reads these as a last chunk of size 0: the body would end early (and what
/// follows would be read as the next request).
#[test]
fn chunk_size_lines_without_a_size_are_400() {
    for body in [
        &b"\r\n\r\n"[..],
        b";x\r\n\r\n",
        b";\r\n\r\n",
        b"5\r\nhello\r\n\r\n\r\n",
        b"5\r\nhello\r\n;ext=1\r\n\r\n",
    ] {
        let mut d = Driver::new(Config::default());
        d.feed(&chunked(body));
        assert!(matches!(d.seen[0], Seen::Head { .. }));
        assert_eq!(
            d.seen[d.seen.len() - 2..],
            [Seen::Error(PeerError::InvalidChunk), Seen::Closed],
            "{body:?}"
        );
        assert!(!d.seen.contains(&Seen::End), "{body:?}");
        assert_eq!(
            d.out_str(),
            error_bytes(PeerError::InvalidChunk),
            "{body:?}"
        );
    }
}

#[test]
fn bare_lf_in_chunk_lines_and_trailers_is_400() {
    for body in [
        &b"5;a\nb\r\nhello\r\n0\r\n\r\n"[..],
        b"5;\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0;x\n\r\n",
        b"0\r\n\n",
        b"0\r\nX-T: t\n\r\n",
        b"0\r\nX-T: t\r\n\n",
    ] {
        let mut d = Driver::new(Config::default());
        d.feed(&chunked(body));
        assert_eq!(
            d.seen[d.seen.len() - 2..],
            [Seen::Error(PeerError::InvalidChunk), Seen::Closed],
            "{body:?}"
        );
        assert!(!d.seen.contains(&Seen::End), "{body:?}");
        assert!(d.out_str().starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
}

/// One line of a chunked request, as the strategy lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Request line, header fields and the empty line that ends the head.
    Head,
    /// `size[;ext]`.
    ChunkSize,
    /// Trailer fields and the empty line that ends them.
    Trailer,
}

/// A valid chunked request as (line or data, kind) pieces; `None` marks chunk data,
/// which carries its own CRLF.
fn chunked_pieces(req: &Req, sizes: &[usize]) -> Vec<(Vec<u8>, Option<Line>)> {
    let mut pieces = vec![(
        format!("POST {} HTTP/1.1", req.path).into_bytes(),
        Some(Line::Head),
    )];
    pieces.push((b"Host: example.com".to_vec(), Some(Line::Head)));
    for (name, value) in &req.headers {
        pieces.push((format!("{name}: {value}").into_bytes(), Some(Line::Head)));
    }
    pieces.push((b"Transfer-Encoding: chunked".to_vec(), Some(Line::Head)));
    pieces.push((Vec::new(), Some(Line::Head)));
    let mut rest = &req.body[..];
    for &size in sizes {
        let size = size.min(rest.len());
        if size == 0 {
            continue;
        }
        pieces.push((
            format!("{size:x};ext=1").into_bytes(),
            Some(Line::ChunkSize),
        ));
        pieces.push(([&rest[..size], b"\r\n"].concat(), None));
        rest = &rest[size..];
    }
    pieces.push((b"0".to_vec(), Some(Line::ChunkSize)));
    pieces.push((b"Trailer-Field: x".to_vec(), Some(Line::Trailer)));
    pieces.push((Vec::new(), Some(Line::Trailer)));
    pieces
}

fn assemble(pieces: &[(Vec<u8>, Option<Line>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (bytes, line) in pieces {
        out.extend(bytes);
        if line.is_some() {
            out.extend(b"\r\n");
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    /// Any line of a valid chunked request ended by a bare LF, or any chunk-size line
    /// stripped of its size (the extension kept or not), is refused with 400 and never
    /// ends the body, in whatever pieces it arrives.
    #[test]
    fn broken_lines_are_400_in_any_split(
        req in req_strategy(),
        sizes in prop::collection::vec(1usize..64, 0..6),
        pick in any::<prop::sample::Index>(),
        strip_size in any::<bool>(),
        keep_ext in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut pieces = chunked_pieces(&req, &sizes);
        let lines: Vec<usize> = (0..pieces.len()).filter(|&i| pieces[i].1.is_some()).collect();
        let at = lines[pick.index(lines.len())];
        let mut input = Vec::new();
        let expected = match (pieces[at].1, strip_size) {
            (Some(Line::ChunkSize), true) => {
                let ext: &[u8] = if keep_ext { b";ext=1" } else { b"" };
                pieces[at].0 = ext.to_vec();
                input.extend(assemble(&pieces));
                PeerError::InvalidChunk
            }
            (kind, _) => {
                for (index, (bytes, line)) in pieces.iter().enumerate() {
                    input.extend(bytes);
                    match line {
                        Some(_) if index == at => input.push(b'\n'),
                        Some(_) => input.extend(b"\r\n"),
                        None => {}
                    }
                }
                match kind {
                    Some(Line::Head) if at == 0 => PeerError::MalformedHead(HeadSyntax::RequestLine),
                    Some(Line::Head) => PeerError::MalformedHead(HeadSyntax::HeaderLine),
                    _ => PeerError::InvalidChunk,
                }
            }
        };
        let mut whole = Driver::new(Config::default());
        whole.feed(&input);
        let mut split_up = Driver::new(Config::default());
        for piece in split(&input, &cuts) {
            split_up.feed(piece);
        }
        prop_assert_eq!(&whole.seen, &split_up.seen);
        prop_assert_eq!(&whole.out, &split_up.out);
        prop_assert!(!whole.seen.contains(&Seen::End));
        prop_assert_eq!(&whole.seen[whole.seen.len() - 2..], &[Seen::Error(expected), Seen::Closed][..]);
        prop_assert_eq!(whole.out_str(), error_bytes(expected));
    }
}
