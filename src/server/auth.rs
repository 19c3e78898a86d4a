//! The admin bearer token: mutating API calls need `Authorization: Bearer <token>`
//! with the token from `admin.token_file`. The comparison takes the same time
//! whatever the input (both sides are hashed, then compared without early exit);
//! the token never reaches a log line or a response.
//!
//! Use [`RequireAdmin`] as an extractor in a handler, or [`require_admin`] as a
//! middleware (`axum::middleware::from_fn_with_state(token, require_admin)`).

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::config::Secret;

/// The configured admin token (none: the mutating API is disabled).
#[derive(Clone, Default)]
pub struct AdminToken(pub Option<Secret>);

impl FromRef<AppState> for AdminToken {
    fn from_ref(state: &AppState) -> Self {
        AdminToken(state.admin_token.clone())
    }
}

/// Compares two byte strings in time that depends on neither content nor length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `admin.token_file` configured: the mutating API is off.
    Disabled,
    /// No bearer token in the request.
    Missing,
    /// A token that is not the admin token.
    Invalid,
}

impl AuthError {
    pub fn status(self) -> StatusCode {
        match self {
            AuthError::Disabled => StatusCode::FORBIDDEN,
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
        }
    }
    fn message(self) -> &'static str {
        match self {
            AuthError::Disabled => "the admin API is disabled: set admin.token_file in the config",
            AuthError::Missing => {
                "missing admin token: send `Authorization: Bearer <token>` with the token from admin.token_file"
            }
            AuthError::Invalid => "invalid admin token",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (
            status,
            axum::Json(serde_json::json!({ "status": "error", "error": self.message() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"rearguard\""),
            );
        }
        r
    }
}

/// Checks the `Authorization` header against the token.
pub fn check(headers: &HeaderMap, token: &AdminToken) -> Result<(), AuthError> {
    let Some(expected) = &token.0 else {
        return Err(AuthError::Disabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        None => Err(AuthError::Missing),
        Some(t) if constant_time_eq(t.as_bytes(), expected.expose().as_bytes()) => Ok(()),
        Some(_) => Err(AuthError::Invalid),
    }
}

/// An extractor that admits only requests with the admin token.
pub struct RequireAdmin;

impl<S> FromRequestParts<S> for RequireAdmin
where
    S: Send + Sync,
    AdminToken: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check(&parts.headers, &AdminToken::from_ref(state)).map(|()| RequireAdmin)
    }
}

/// Middleware form: `route_layer(from_fn_with_state(token, require_admin))`.
pub async fn require_admin(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    match check(req.headers(), &token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_token_is_checked() {
        let t = AdminToken(Some(Secret::new("s3cret")));
        assert!(check(&headers("Bearer s3cret"), &t).is_ok());
        assert!(check(&headers("bearer  s3cret "), &t).is_ok());
        assert_eq!(
            check(&headers("Bearer nope"), &t).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check(&headers("Basic s3cret"), &t).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check(&HeaderMap::new(), &t).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        let off = AdminToken(None);
        assert_eq!(
            check(&headers("Bearer s3cret"), &off).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
        assert!(constant_time_eq(b"a", b"a"));
        assert!(!constant_time_eq(b"a", b"ab"));
    }
}
