//! Google sends int64 fields (`generation`, `int64Value`, ...) as JSON strings.
//! These accept a string or a number and write a string.

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(i64),
}

fn to_i64<E: serde::de::Error>(v: StrOrNum) -> Result<i64, E> {
    match v {
        StrOrNum::Num(n) => Ok(n),
        StrOrNum::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| E::custom(format!("expected an int64 as a string, got {s:?}"))),
    }
}

/// `Option<i64>` fields.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<StrOrNum>::deserialize(d)? {
            None => Ok(None),
            Some(v) => to_i64(v).map(Some),
        }
    }
}

/// `i64` fields.
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        to_i64(StrOrNum::deserialize(d)?)
    }
}
