//! The typed parse of an interaction body, without twilight's costly detour
//! around fields it does not model.
//!
//! twilight-model reads the top-level keys as a field enum with no catch-all
//! variant: every key it does not know makes serde build (and format) an
//! "unknown field, expected one of …" error listing all nineteen fields, which
//! twilight then discards. Discord sends two such keys in every interaction,
//! and the formatting cost about a quarter of the whole parse. Those keys are
//! skipped here before twilight sees them; everything else reaches it
//! unchanged, so the result is the same [`Interaction`].

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use twilight_model::application::interaction::Interaction;

/// Top-level keys Discord sends that twilight-model does not model (checked
/// by a test, so an upgrade that starts reading one of them fails it).
pub(super) const UNMODELLED_KEYS: [&str; 2] = ["attachment_size_limit", "entitlement_sku_ids"];

/// Parses `body` as an [`Interaction`], as `serde_json::from_slice` would.
pub(super) fn interaction(body: &[u8]) -> serde_json::Result<Interaction> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let interaction = deserializer.deserialize_map(TopLevel)?;
    deserializer.end()?;
    Ok(interaction)
}

/// Receives the top-level map and hands it to twilight through [`Filtered`].
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Interaction;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("enum Interaction")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Interaction, A::Error> {
        serde::Deserialize::deserialize(Filtered(map))
    }
}

/// The top-level map, minus [`UNMODELLED_KEYS`], as a deserializer.
struct Filtered<A>(A);

impl<'de, A: MapAccess<'de>> Deserializer<'de> for Filtered<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Filtered<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            match self.0.next_key::<Key<'de>>()? {
                None => return Ok(None),
                Some(key) if UNMODELLED_KEYS.contains(&key.as_str()) => {
                    self.0.next_value::<IgnoredAny>()?;
                }
                Some(Key::Borrowed(key)) => {
                    return seed
                        .deserialize(BorrowedStrDeserializer::new(key))
                        .map(Some);
                }
                Some(Key::Owned(key)) => {
                    return seed.deserialize(StringDeserializer::new(key)).map(Some);
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// A map key, borrowed from the body unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(key) => key,
            Self::Owned(key) => key,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }

            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn fixtures() -> Vec<Vec<u8>> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/interactions");
        let mut bodies: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        bodies.sort();
        bodies
    }

    #[test]
    fn same_interaction_as_plain_serde_json() {
        let mut compared = 0;
        for body in fixtures() {
            let plain = serde_json::from_slice::<Interaction>(&body);
            let filtered = interaction(&body);
            match (plain, filtered) {
                (Ok(plain), Ok(filtered)) => {
                    assert_eq!(plain, filtered);
                    compared += 1;
                }
                (Err(_), Err(_)) => {}
                (plain, filtered) => panic!("differ: {plain:?} vs {filtered:?}"),
            }
        }
        assert!(compared >= 10, "only {compared} fixtures parsed");
    }

    #[test]
    fn escaped_keys_and_trailing_garbage_as_serde_json() {
        let body = br#"{"\u0069d":"1","application_id":"2","type":1,"token":"t","version":1,"authorizing_integration_owners":{},"attachment_size_limit":5,"entitlement_sku_ids":[]}"#;
        assert_eq!(
            interaction(body).unwrap(),
            serde_json::from_slice::<Interaction>(body).unwrap()
        );
        assert!(interaction(br#"{"type":1} x"#).is_err());
        assert!(interaction(b"[1]").is_err());
    }

    #[test]
    fn twilight_still_ignores_the_skipped_keys() {
        // If twilight-model starts reading one of these keys, a value of the
        // wrong type makes its parse fail here: then stop skipping that key.
        for key in UNMODELLED_KEYS {
            let body = format!(
                r#"{{"id":"1","application_id":"2","type":1,"token":"t","version":1,"authorizing_integration_owners":{{}},"{key}":{{"not":"modelled"}}}}"#
            );
            assert!(
                serde_json::from_slice::<Interaction>(body.as_bytes()).is_ok(),
                "twilight-model now reads `{key}`"
            );
        }
    }
}
