//! Whole numbers in request bodies as JSON Schema counts them: `30` and `30.0` alike (Python's
//! `json` writes a float as `30.0`, and the document's `integer` admits it), never `30.5`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// For an optional integer field: `#[serde(default, deserialize_with = "whole_number::optional")]`.
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    deserializer.deserialize_option(Optional(PhantomData))
}

struct Optional<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(Whole(PhantomData)).map(Some)
    }
}

struct Whole<T>(PhantomData<T>);

impl<T> Whole<T> {
    fn out_of_range<E: de::Error>(value: impl fmt::Display) -> E {
        E::custom(format_args!("{value} is out of range for this field"))
    }
}

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        T::try_from(value).map_err(|_| Self::out_of_range(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        T::try_from(value).map_err(|_| Self::out_of_range(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        // Within ±2^53 every whole f64 is exact, and the casts below cannot round.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if value.fract() != 0.0 || !value.is_finite() {
            return Err(E::invalid_type(de::Unexpected::Float(value), &self));
        }
        if value.abs() > EXACT {
            return Err(Self::out_of_range(value));
        }
        #[allow(clippy::cast_possible_truncation)]
        let whole = value as i64;
        self.visit_i64(whole)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Limits {
        #[serde(default, deserialize_with = "super::optional")]
        memory_mb: Option<i64>,
        #[serde(default, deserialize_with = "super::optional")]
        output_limit_bytes: Option<u64>,
    }

    fn parse(json: &str) -> Result<Limits, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_are_taken_written_either_way_and_fractions_are_refused() {
        let whole = |memory_mb, output_limit_bytes| Limits {
            memory_mb,
            output_limit_bytes,
        };
        assert_eq!(parse("{}"), Ok(whole(None, None)));
        assert_eq!(
            parse(r#"{"memory_mb": null, "output_limit_bytes": null}"#),
            Ok(whole(None, None))
        );
        assert_eq!(
            parse(r#"{"memory_mb": 256, "output_limit_bytes": 4096}"#),
            Ok(whole(Some(256), Some(4096)))
        );
        assert_eq!(
            parse(r#"{"memory_mb": 256.0, "output_limit_bytes": 4.096e3}"#),
            Ok(whole(Some(256), Some(4096)))
        );
        assert_eq!(parse(r#"{"memory_mb": -1.0}"#), Ok(whole(Some(-1), None)));
        for (json, says) in [
            (
                r#"{"memory_mb": 256.5}"#,
                "floating point `256.5`, expected an integer",
            ),
            (r#"{"memory_mb": "256"}"#, "expected an integer"),
            (r#"{"output_limit_bytes": -1}"#, "-1 is out of range"),
            (r#"{"output_limit_bytes": -1.0}"#, "-1 is out of range"),
            (r#"{"memory_mb": 1e300}"#, "out of range"),
            (r#"{"memory_mb": 18446744073709551615}"#, "out of range"),
        ] {
            let error = parse(json).expect_err(json);
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
