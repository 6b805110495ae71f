//! Request extractors that refuse bad input in the one error format.
//!
//! axum's own `Query`, `Json`, `String` and `Path` extractors answer a rejection as plain text;
//! these answer an [`ApiError`] with a code, a message and the field path instead:
//! `?dry_run=maybe` → `400 invalid_query, field dry_run`; a body that is not JSON → `400
//! invalid_json`; JSON of the wrong shape → `422 invalid_body` with the field path (`node`,
//! `reports[0].task`).

use crate::api_types::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The query string, deserialised as `T`.
pub struct ApiQuery<T>(pub T);

/// A JSON body, deserialised as `T`.
pub struct ApiJson<T>(pub T);

/// A UTF-8 body (a job spec is parsed and validated by the solver's spec loader).
pub struct ApiText(pub String);

/// Path parameters.
pub struct ApiPath<T>(pub T);

/// The field path of a serde error: `path` as serde_path_to_error gives it, extended by the
/// field a "missing field" / "unknown field" message names (those are reported at the parent).
pub fn field_path(path: &str, message: &str) -> String {
    let base = if path == "." { "" } else { path };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if !base.ends_with(name) => {
            if base.is_empty() {
                name.to_string()
            } else {
                format!("{base}.{name}")
            }
        }
        _ => base.to_string(),
    }
}

/// Parses a query string as `T`.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = field_path(&path, &message);
        ApiError::new(400, "invalid_query", format!("query string: {message}")).with_field(field)
    })
}

/// Refuses a body that is not JSON at all (`400 invalid_json`), before it is read as a type.
pub fn check_json_syntax(text: &str) -> Result<(), ApiError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not JSON: {e}")))
}

/// Parses a JSON body as `T`: not JSON → 400, JSON of the wrong shape → 422 with the field path.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    check_json_syntax(text)?;
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = field_path(&path, &message);
        ApiError::new(422, "invalid_body", message).with_field(field)
    })
}

fn utf8(bytes: Bytes) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| ApiError::new(400, "invalid_body", format!("the body is not UTF-8: {e}")))
}

async fn body_text<S: Send + Sync>(req: Request, state: &S) -> Result<String, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|r| {
        let status = r.status().as_u16();
        let code = if status == 413 {
            "payload_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, code, r.body_text())
    })?;
    utf8(bytes)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let text = body_text(req, state).await?;
        parse_json(&text).map(ApiJson)
    }
}

impl<S: Send + Sync> FromRequest<S> for ApiText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        body_text(req, state).await.map(ApiText)
    }
}

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| ApiError::new(r.status().as_u16(), "invalid_path", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        #[serde(default)]
        dry_run: bool,
        node: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        task: u64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        node: String,
        reports: Vec<Inner>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let e = parse_query::<Q>("dry_run=maybe").unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "invalid_query"));
        assert_eq!(e.field.as_deref(), Some("dry_run"), "{e:?}");
        let e = parse_query::<Q>("dry_rn=true").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("dry_rn"), "{e:?}");
        assert!(parse_query::<Q>("dry_run=true&node=a").unwrap().dry_run);
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_json::<Body>("{\"node\": ").unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "invalid_json"));
        let e = parse_json::<Body>(r#"{"reports": []}"#).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("node")), "{e:?}");
        let e = parse_json::<Body>(r#"{"node": "a", "reports": [{"task": "x"}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("reports[0].task"), "{e:?}");
        let e = parse_json::<Body>(r#"{"node": "a", "reports": [{}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("reports[0].task"), "{e:?}");
    }
}
