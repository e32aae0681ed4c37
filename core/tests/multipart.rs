//! What the encoder writes parses back with `multer` into the same parts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use yuyo_core::multipart::{FilePart, FileSource, MultipartBody, Segment};

/// A parsed part: name, decoded filename, content type, bytes.
type Parsed = (String, Option<String>, Option<String>, Vec<u8>);

fn parse(body: Bytes, boundary: &str) -> Vec<Parsed> {
    let boundary = boundary.to_owned();
    futures::executor::block_on(async move {
        // Feed the body in small pieces, as a network would.
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
            .step_by(7)
            .map(|at| Ok(body.slice(at..(at + 7).min(body.len()))))
            .collect();
        let mut multipart = multer::Multipart::new(futures::stream::iter(pieces), boundary);
        let mut parts = Vec::new();
        while let Some(field) = multipart.next_field().await.unwrap() {
            let name = field.name().unwrap().to_owned();
            let filename = field
                .file_name()
                .map(|name| percent_decode_str(name).decode_utf8().unwrap().into_owned());
            let content_type = field.content_type().map(ToString::to_string);
            parts.push((
                name,
                filename,
                content_type,
                field.bytes().await.unwrap().to_vec(),
            ));
        }
        parts
    })
}

/// The body with every `Segment::File` filled in by `supply`.
fn assemble(body: &MultipartBody, supply: impl Fn(usize, &FileSource) -> Vec<u8>) -> Bytes {
    let mut out = Vec::new();
    for segment in body.segments() {
        match segment {
            Segment::Bytes(bytes) => out.extend_from_slice(bytes),
            Segment::File { index, source } => out.extend(supply(*index, source)),
        }
    }
    Bytes::from(out)
}

fn expected(payload: &[u8], files: &[(String, Option<String>, Vec<u8>)]) -> Vec<Parsed> {
    let mut parts = vec![(
        "payload_json".to_owned(),
        None,
        Some("application/json".to_owned()),
        payload.to_vec(),
    )];
    for (index, (name, content_type, data)) in files.iter().enumerate() {
        parts.push((
            format!("files[{index}]"),
            Some(name.clone()),
            Some(
                content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
            ),
            data.clone(),
        ));
    }
    parts
}

#[test]
fn round_trip_with_deferred_files() {
    let payload = Bytes::from_static(br#"{"type":4,"data":{"content":"files"}}"#);
    let files = vec![
        FilePart::memory("a.txt", "in memory").with_content_type("text/plain"),
        FilePart::source(
            "from disk \"quoted\" é.png",
            FileSource::Path {
                path: "/tmp/x.png".into(),
                len: Some(5),
            },
        )
        .with_content_type("image/png"),
        FilePart::source("later.bin", FileSource::Later { id: 9, len: None }),
        FilePart::memory("big.bin", vec![0xAB_u8; 20_000]),
    ];
    let body = MultipartBody::encode(payload.clone(), files);
    assert_eq!(body.content_length(), None, "one file has no known length");
    assert!(body.to_bytes().is_none());
    let content_type = body.content_type();
    assert_eq!(
        content_type.to_str().unwrap(),
        format!("multipart/form-data; boundary={}", body.boundary())
    );
    let files_seen: Vec<usize> = body
        .segments()
        .iter()
        .filter_map(|segment| match segment {
            Segment::File { index, .. } => Some(*index),
            Segment::Bytes(_) => None,
        })
        .collect();
    assert_eq!(files_seen, [1, 2]);

    let bytes = assemble(&body, |index, source| match (index, source) {
        (1, FileSource::Path { .. }) => b"PNG!!".to_vec(),
        (2, FileSource::Later { id: 9, .. }) => b"later data".to_vec(),
        other => panic!("unexpected {other:?}"),
    });
    let parsed = parse(bytes, body.boundary());
    assert_eq!(
        parsed,
        expected(
            &payload,
            &[
                (
                    "a.txt".into(),
                    Some("text/plain".into()),
                    b"in memory".to_vec()
                ),
                (
                    "from disk \"quoted\" é.png".into(),
                    Some("image/png".into()),
                    b"PNG!!".to_vec()
                ),
                ("later.bin".into(), None, b"later data".to_vec()),
                ("big.bin".into(), None, vec![0xAB; 20_000]),
            ]
        )
    );
}

#[test]
fn known_lengths_give_the_exact_length() {
    let files = vec![
        FilePart::memory("a", "1234"),
        FilePart::source(
            "b",
            FileSource::Later {
                id: 0,
                len: Some(3),
            },
        ),
    ];
    let body = MultipartBody::encode(Bytes::from_static(b"{}"), files);
    let bytes = assemble(&body, |_, _| b"xyz".to_vec());
    assert_eq!(body.content_length(), Some(bytes.len() as u64));
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("image/png".to_owned())),
        Just(Some("text/plain; charset=utf-8".to_owned())),
        Just(Some("application/x-yuyo".to_owned())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn arbitrary_parts_round_trip(
        payload in prop::collection::vec(any::<u8>(), 0..300),
        files in prop::collection::vec(
            (any::<String>(), content_type(), prop::collection::vec(any::<u8>(), 0..2000), any::<bool>()),
            0..5,
        ),
    ) {
        let parts: Vec<FilePart> = files
            .iter()
            .enumerate()
            .map(|(index, (name, content_type, data, deferred))| {
                let part = if *deferred {
                    FilePart::source(name.clone(), FileSource::Later { id: index as u64, len: Some(data.len() as u64) })
                } else {
                    FilePart::memory(name.clone(), data.clone())
                };
                match content_type {
                    Some(content_type) => part.with_content_type(content_type.clone()),
                    None => part,
                }
            })
            .collect();
        let body = MultipartBody::encode(Bytes::from(payload.clone()), parts);
        let bytes = assemble(&body, |index, _| files[index].2.clone());
        prop_assert_eq!(body.content_length(), Some(bytes.len() as u64));
        let want: Vec<_> = files.iter().map(|(n, c, d, _)| (n.clone(), c.clone(), d.clone())).collect();
        prop_assert_eq!(parse(bytes, body.boundary()), expected(&payload, &want));
    }

    #[test]
    fn boundary_never_in_in_memory_content(
        data in prop::collection::vec(any::<u8>(), 0..2000),
    ) {
        let body = MultipartBody::encode(Bytes::from(data.clone()), vec![FilePart::memory("f", data.clone())]);
        let boundary = body.boundary().as_bytes();
        prop_assert!(!data.windows(boundary.len()).any(|w| w == boundary));
    }
}
