//! A cheap look at a JSON body's `type`, used to classify payloads the typed
//! model rejected (and PINGs, which twilight-model may not read at all).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What the body's `type` field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeField {
    /// There is no `type` key.
    Missing,
    /// `type` is not an integer (a string, a float, a number beyond 64 bits…).
    NotInteger,
    /// `type` is this integer.
    Integer(i128),
}

/// The body is not a JSON object (invalid JSON, another JSON value, or
/// trailing data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotObject;

/// Read `body` as a JSON object and report its `type` (the last one wins if
/// repeated, as with `serde_json::Value`); other values are skipped without
/// building them.
pub(crate) fn probe_type(body: &[u8]) -> Result<TypeField, NotObject> {
    // serde_json does not validate the UTF-8 of strings it skips, but JSON
    // text must be UTF-8 (RFC 8259), so check the whole body first.
    let body = std::str::from_utf8(body).map_err(|_| NotObject)?;
    serde_json::from_str::<Probe>(body)
        .map(|probe| probe.0)
        .map_err(|_| NotObject)
}

struct Probe(TypeField);

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ProbeVisitor)
    }
}

struct ProbeVisitor;

impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut field = TypeField::Missing;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => field = map.next_value::<TypeValue>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Probe(field))
    }
}

/// An object key: `type` or anything else (compared after unescaping, without
/// allocating).
enum Key {
    Type,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(if key == "type" { Key::Type } else { Key::Other })
    }
}

/// Any JSON value, classified as integer or not.
struct TypeValue(TypeField);

impl<'de> Deserialize<'de> for TypeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TypeValueVisitor)
    }
}

struct TypeValueVisitor;

impl<'de> Visitor<'de> for TypeValueVisitor {
    type Value = TypeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<TypeValue, E> {
        Ok(TypeValue(TypeField::Integer(i128::from(value))))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<TypeValue, E> {
        Ok(TypeValue(TypeField::Integer(i128::from(value))))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TypeValue, E> {
        Ok(TypeValue(TypeField::NotInteger))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TypeValue, E> {
        Ok(TypeValue(TypeField::NotInteger))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TypeValue, E> {
        Ok(TypeValue(TypeField::NotInteger))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TypeValue, E> {
        Ok(TypeValue(TypeField::NotInteger))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TypeValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TypeValue(TypeField::NotInteger))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypeValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(TypeValue(TypeField::NotInteger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let cases: &[(&str, Result<TypeField, NotObject>)] = &[
            (r#"{"type":1}"#, Ok(TypeField::Integer(1))),
            (
                r#"{"a":[1,{"type":3}],"type":-7}"#,
                Ok(TypeField::Integer(-7)),
            ),
            (r#"{"typ\u0065":2}"#, Ok(TypeField::Integer(2))),
            (
                r#"{"type":18446744073709551615}"#,
                Ok(TypeField::Integer(u64::MAX.into())),
            ),
            (r#"{"type":1e2}"#, Ok(TypeField::NotInteger)),
            (r#"{"type":2.0}"#, Ok(TypeField::NotInteger)),
            (r#"{"type":"2"}"#, Ok(TypeField::NotInteger)),
            (r#"{"type":[2]}"#, Ok(TypeField::NotInteger)),
            (r#"{"type":{"x":2}}"#, Ok(TypeField::NotInteger)),
            (r#"{"type":null}"#, Ok(TypeField::NotInteger)),
            (
                r#"{"type":99999999999999999999999}"#,
                Ok(TypeField::NotInteger),
            ),
            (r#"{}"#, Ok(TypeField::Missing)),
            (r#"{"type":2,"type":3}"#, Ok(TypeField::Integer(3))),
            (r#"[{"type":2}]"#, Err(NotObject)),
            (r#"{"type":2} x"#, Err(NotObject)),
            (r#"{"type":2"#, Err(NotObject)),
            ("2", Err(NotObject)),
            ("{\"type\":1,\"a\":\"\u{fffd}\"}", Ok(TypeField::Integer(1))),
            ("", Err(NotObject)),
        ];
        for (body, expected) in cases {
            assert_eq!(probe_type(body.as_bytes()), *expected, "{body}");
        }
        assert_eq!(probe_type(b"{\"type\":1,\"a\":\"\xff\"}"), Err(NotObject));
    }
}
