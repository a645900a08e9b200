//! Integer fields of JSON bodies. To JSON Schema (OpenAPI 3.1) `2`, `2.0` and `2e0` are the same
//! integer, so a client generated from the document may send any of them; serde alone takes only
//! the first. These take a whole number however it is spelt, and refuse fractions, negatives and
//! whatever does not fit the field's type.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, Unexpected, Visitor};

/// The largest whole number an `f64` holds exactly; every bound the document states is below it.
const EXACT_IN_F64: f64 = 9_007_199_254_740_992.0;

/// A whole number of type `T`, read from any JSON spelling of it.
pub struct Whole<T>(pub T);

struct WholeVisitor<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for WholeVisitor<T> {
    type Value = Whole<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number that fits a {}", std::any::type_name::<T>())
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Whole<T>, E> {
        T::try_from(v).map(Whole).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Whole<T>, E> {
        let unsigned = u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
        self.visit_u64(unsigned)
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Whole<T>, E> {
        if v.fract() == 0.0 && (0.0..=EXACT_IN_F64).contains(&v) {
            // Exact: `v` is a whole number within the range an f64 counts without gaps.
            self.visit_u64(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor(PhantomData))
    }
}

/// `#[serde(deserialize_with = "whole::required")]`.
pub fn required<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    Whole::deserialize(d).map(|w| w.0)
}

/// `#[serde(default, deserialize_with = "whole::optional")]`: `null` or absent is `None`.
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Whole<T>>::deserialize(d).map(|o| o.map(|w| w.0))
}

/// `#[serde(default, deserialize_with = "whole::list")]`.
pub fn list<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Whole<T>>::deserialize(d).map(|v| v.into_iter().map(|w| w.0).collect())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::required")]
        count: u16,
    }

    fn count(json: &str) -> Result<u16, String> {
        serde_json::from_str::<Body>(&format!(r#"{{"count": {json}}}"#))
            .map(|b| b.count)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_whole_number_is_read_however_it_is_spelt() {
        for spelling in ["2", "2.0", "2e0", "0.2e1", "2.000"] {
            assert_eq!(count(spelling), Ok(2), "{spelling}");
        }
        assert_eq!(count("-0.0"), Ok(0));
        for bad in ["2.5", "-1", "65536", "1e300", "\"2\"", "null", "true"] {
            assert!(count(bad).is_err(), "{bad}");
        }
    }
}
