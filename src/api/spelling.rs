//! String fields that VolSync's schema leaves open (any string is admitted) while
//! ferrosync knows a fixed set of spellings: `accessModes` items, `serviceType`,
//! `volumeMode`, `latestMoverStatus.result`.
//!
//! Admission must stay as wide as VolSync's, and an object with a spelling ferrosync does
//! not know must still deserialise, so the controller can say what is wrong instead of
//! failing to read the object. The schema is a plain string; the controller decides.

use std::{borrow::Cow, fmt};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::IntoDeserializer};

/// A value ferrosync knows (`Known`), or any other string the API admitted (`Unknown`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Spelling<T> {
    /// One of the spellings of `T`.
    Known(T),
    /// Any other string, kept exactly as written.
    Unknown(String),
}

/// An API enum with a fixed spelling per value.
pub trait Spelled: Copy {
    /// The spelling used in the API.
    fn as_str(self) -> &'static str;
}

impl<T: Spelled> Spelling<T> {
    /// The value, if ferrosync knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Spelling::Known(v) => Some(*v),
            Spelling::Unknown(_) => None,
        }
    }

    /// The string as it appears in the object.
    pub fn as_str(&self) -> &str {
        match self {
            Spelling::Known(v) => v.as_str(),
            Spelling::Unknown(s) => s,
        }
    }
}

impl<T> From<T> for Spelling<T> {
    fn from(value: T) -> Self {
        Spelling::Known(value)
    }
}

impl<T: Spelled> fmt::Display for Spelling<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<T: Spelled> Serialize for Spelling<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spelling<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // Unit variants deserialise from their name; anything else is kept verbatim.
        let as_t: Result<T, serde::de::value::Error> =
            T::deserialize(text.as_str().into_deserializer());
        Ok(match as_t {
            Ok(v) => Spelling::Known(v),
            Err(_) => Spelling::Unknown(text),
        })
    }
}

impl<T> JsonSchema for Spelling<T> {
    fn schema_name() -> Cow<'static, str> {
        "Spelling".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccessMode, ServiceType};

    #[test]
    fn known_spellings_parse_and_others_are_kept_verbatim() {
        let known: Spelling<AccessMode> = serde_json::from_str("\"ReadWriteOnce\"").unwrap();
        assert_eq!(known, Spelling::Known(AccessMode::ReadWriteOnce));
        let other: Spelling<ServiceType> = serde_json::from_str("\"ExternalName\"").unwrap();
        assert_eq!(other, Spelling::Unknown("ExternalName".into()));
        assert_eq!(other.known(), None);
        for text in ["\"ExternalName\"", "\"LoadBalancer\"", "\"\""] {
            let v: Spelling<ServiceType> = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), text, "round trip");
        }
    }

    #[test]
    fn a_non_string_is_still_an_error() {
        assert!(serde_json::from_str::<Spelling<AccessMode>>("3").is_err());
    }
}
