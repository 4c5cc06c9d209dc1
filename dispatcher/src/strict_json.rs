//! JSON bodies read as the OpenAPI document describes them.
//!
//! serde's derived `Deserialize` reads a struct from a JSON object *or* from an array of
//! its fields in order, so `"chat": [null, null]` passed for an object the schema requires.
//! [`parse`] reads through [`Strict`], which refuses an array wherever a struct is
//! expected, at any depth, and names the field it is about (`chat: invalid type:
//! sequence, expected struct ChatAddresses`).

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value;

/// Decodes `bytes` into `T`; the error names the path of the field it is about.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(Strict(&value)).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" => e.inner().to_string(),
            _ => format!("{path}: {}", e.inner()),
        }
    })
}

/// A parsed JSON value as a deserializer that takes structs only from objects.
struct Strict<'a>(&'a Value);

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = Seq(items.iter());
                let out = visitor.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(out),
                    n => Err(de::Error::invalid_length(
                        items.len() - n,
                        &"fewer elements",
                    )),
                }
            }
            Value::Object(map) => visitor.visit_map(Map {
                entries: map.iter(),
                value: None,
            }),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(
                unexpected(other),
                &format!("struct {name}").as_str(),
            )),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de> de::SeqAccess<'de> for Seq<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Strict(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'a> {
    entries: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'de> de::MapAccess<'de> for Map<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(key.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_common::api::{DeviceRegistration, SendRequest, UserProfile};

    #[test]
    fn structs_come_only_from_objects() {
        let err = parse::<UserProfile>(br#"{"chat": [null, null]}"#).unwrap_err();
        assert!(err.starts_with("chat: invalid type: sequence"), "{err}");
        let err =
            parse::<SendRequest>(br#"{"to": ["a"], "title": "t", "push": [null]}"#).unwrap_err();
        assert!(err.starts_with("push: invalid type: sequence"), "{err}");
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let body = br#"{"to": ["a", {"user_id": "b", "email": "b@example.com"}],
            "title": "Hi", "priority": "high", "ttl_s": 60, "data": {"k": [1, null]},
            "channels": ["in_app", "email"], "escalate": {"after_s": 5, "channels": ["email"]}}"#;
        let strict: SendRequest = parse(body).expect("strict");
        let plain: SendRequest = serde_json::from_slice(body).expect("plain");
        assert_eq!(strict, plain);
        let err = parse::<SendRequest>(br#"{"to": ["a"], "priority": "urgent"}"#).unwrap_err();
        assert!(
            err.starts_with("priority: unknown variant `urgent`"),
            "{err}"
        );
        let err = parse::<DeviceRegistration>(br#"{"platform": "fcm", "nope": 1}"#).unwrap_err();
        assert!(err.contains("unknown field `nope`"), "{err}");
    }
}
