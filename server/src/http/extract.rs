//! Extractors that reject with `ApiError` (problem+json) instead of axum's plain text.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `Json<T>` whose rejections are problem documents (400 syntax, 413 size, 415 type,
/// 422 unknown or invalid fields).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query<T>` whose rejections are problem documents.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` whose rejections are problem documents.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Deserializes an optional `i32` that JSON may spell `18368` or `18368.0`: JSON Schema's
/// `integer` (and many clients' number encoders) treat both as the same integer.
pub fn integral<'de, D>(deserializer: D) -> Result<Option<i32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Deserialize, Error};
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value = if let Some(i) = number.as_i64() {
        i32::try_from(i).ok()
    } else {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= f64::from(i32::MIN) && *f <= f64::from(i32::MAX))
            .map(|f| f as i32)
    };
    value.map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "invalid value: {number}, expected a 32-bit integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::integral")]
        n: Option<i32>,
    }

    fn parse(json: &str) -> Result<Option<i32>, serde_json::Error> {
        serde_json::from_str::<T>(json).map(|t| t.n)
    }

    #[test]
    fn integral_numbers_in_either_spelling_are_accepted() {
        assert_eq!(parse(r#"{"n": 3600}"#).unwrap(), Some(3600));
        assert_eq!(parse(r#"{"n": 3600.0}"#).unwrap(), Some(3600));
        assert_eq!(parse(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        assert!(parse(r#"{"n": 3600.5}"#).is_err());
        assert!(parse(r#"{"n": 1e12}"#).is_err());
        assert!(parse(r#"{"n": "3600"}"#).is_err());
    }
}
