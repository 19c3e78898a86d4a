//! proto3 JSON writes `double` fields as numbers, except NaN and the
//! infinities, which it writes as the strings `"NaN"`, `"Infinity"` and
//! `"-Infinity"`; parsers accept a number in a string too
//! (https://protobuf.dev/programming-guides/json/, "float, double").
//! These accept all of them and write the same way.

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Num(f64),
    Str(String),
}

fn to_f64<E: serde::de::Error>(v: StrOrNum) -> Result<f64, E> {
    match v {
        StrOrNum::Num(n) => Ok(n),
        StrOrNum::Str(s) => match s.trim() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            t => t
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| E::custom(format!("expected a double, got {s:?}"))),
        },
    }
}

fn write<S: Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v == f64::INFINITY {
        s.serialize_str("Infinity")
    } else if v == f64::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        s.serialize_f64(v)
    }
}

/// `Option<f64>` fields.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => write(*n, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<StrOrNum>::deserialize(d)? {
            None => Ok(None),
            Some(v) => to_f64(v).map(Some),
        }
    }
}

/// `f64` fields.
pub mod required {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        write(*v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        to_f64(StrOrNum::deserialize(d)?)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, serde::Serialize, Debug)]
    struct V {
        #[serde(with = "super::required")]
        x: f64,
    }

    #[test]
    fn non_finite_values_are_strings() {
        for (text, check) in [
            (r#"{"x":"NaN"}"#, f64::is_nan as fn(f64) -> bool),
            (r#"{"x":"Infinity"}"#, |x| x == f64::INFINITY),
            (r#"{"x":"-Infinity"}"#, |x| x == f64::NEG_INFINITY),
            (r#"{"x":0.25}"#, |x| x == 0.25),
            (r#"{"x":"1.5"}"#, |x| x == 1.5),
        ] {
            let v: V = serde_json::from_str(text).unwrap();
            assert!(check(v.x), "{text}");
            assert_eq!(
                serde_json::to_string(&v).unwrap(),
                text.replace("\"1.5\"", "1.5")
            );
        }
        assert!(serde_json::from_str::<V>(r#"{"x":"lots"}"#).is_err());
    }
}
