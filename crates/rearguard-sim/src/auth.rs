//! Token endpoints: the metadata server's (what google-cloud-auth's
//! metadata-server credentials request) and an OAuth token endpoint (JWT
//! bearer and refresh-token grants); and the check every API call passes.
//!
//! google-cloud-auth's service-account credentials sign their own JWT access
//! token (no token endpoint is called), so a bearer token that is a well-formed
//! RS256 JWT from a service account, with the `cloud-platform` scope or an
//! audience, and not expired by the system clock, is accepted too.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use super::util::{random_hex, ApiError};
use rearguard_clock::TimestampMs;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub(crate) struct AuthState {
    /// Token → expiry (clock ms).
    tokens: HashMap<String, TimestampMs>,
    pub require_auth: bool,
    pub token_lifetime_secs: u64,
    pub project: String,
    pub email: String,
    pub accept_self_signed_jwt: bool,
    /// Counts of tokens issued, for tests.
    pub issued: u64,
}

impl AuthState {
    pub fn new(project: &str) -> Self {
        Self {
            tokens: HashMap::new(),
            require_auth: true,
            token_lifetime_secs: 3599,
            project: project.to_string(),
            email: format!("rearguard@{project}.iam.gserviceaccount.com"),
            accept_self_signed_jwt: true,
            issued: 0,
        }
    }

    fn issue(&mut self, now: TimestampMs) -> (String, u64) {
        let token = format!("ya29.fake-{}", random_hex(16));
        let lifetime = self.token_lifetime_secs;
        self.tokens
            .insert(token.clone(), now + lifetime as i64 * 1000);
        self.issued += 1;
        (token, lifetime)
    }

    /// `GET /computeMetadata/v1/instance/service-accounts/default/token[?scopes=a,b]`.
    pub fn metadata_token(&mut self, now: TimestampMs) -> Value {
        let (token, lifetime) = self.issue(now);
        json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})
    }

    /// `POST /token`: the OAuth 2.0 token endpoint (form or JSON body).
    /// Errors are OAuth-shaped: `{"error": "...", "error_description": "..."}`.
    pub fn oauth_token(&mut self, now: TimestampMs, body: &[u8]) -> Result<Value, (u16, Value)> {
        let fields: HashMap<String, String> = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            _ => url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        };
        let oauth_err = |error: &str, description: &str| {
            (
                400,
                json!({"error": error, "error_description": description}),
            )
        };
        match fields.get("grant_type").map(String::as_str) {
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
                let assertion = fields.get("assertion").ok_or_else(|| {
                    oauth_err("invalid_request", "Missing required parameter: assertion")
                })?;
                check_jwt(assertion, true).map_err(|e| oauth_err("invalid_grant", &e))?;
            }
            // RFC 8693 token exchange at Google's STS
            // (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token),
            // what external_account credentials call with their subject token.
            Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
                for field in ["subject_token", "subject_token_type", "audience"] {
                    if fields.get(field).is_none_or(|t| t.is_empty()) {
                        return Err(oauth_err(
                            "invalid_request",
                            &format!("Missing required parameter: {field}"),
                        ));
                    }
                }
                let (token, lifetime) = self.issue(now);
                return Ok(json!({
                    "access_token": token,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                }));
            }
            Some("refresh_token") => {
                if fields.get("refresh_token").is_none_or(|t| t.is_empty()) {
                    return Err(oauth_err(
                        "invalid_request",
                        "Missing required parameter: refresh_token",
                    ));
                }
                if fields.get("client_id").is_none_or(|t| t.is_empty()) {
                    return Err(oauth_err(
                        "invalid_client",
                        "The OAuth client was not found.",
                    ));
                }
            }
            Some(other) => {
                return Err(oauth_err(
                    "unsupported_grant_type",
                    &format!("Invalid grant_type: {other}"),
                ))
            }
            None => {
                return Err(oauth_err(
                    "invalid_request",
                    "Missing required parameter: grant_type",
                ))
            }
        }
        let (token, lifetime) = self.issue(now);
        Ok(json!({
            "access_token": token,
            "expires_in": lifetime,
            "token_type": "Bearer",
            "scope": CLOUD_PLATFORM_SCOPE,
        }))
    }

    /// IAM Credentials `generateAccessToken` for `email` (the caller's token was
    /// checked already): `{"accessToken", "expireTime"}`, the scope required
    /// (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken).
    pub fn generate_access_token(
        &mut self,
        now: TimestampMs,
        email: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        if !email.contains('@') {
            return Err(ApiError::invalid_argument(format!(
                "Invalid form of account ID {email}. Should be [Gaia ID |Email |Unique ID |] of the account"
            )));
        }
        let scopes = body
            .and_then(|b| b.get("scope"))
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::invalid_argument("Scope required."))?;
        if scopes.iter().any(|s| !s.is_string()) {
            return Err(ApiError::invalid_argument(
                "Scope must be a list of strings.",
            ));
        }
        let (token, lifetime) = self.issue(now);
        Ok(json!({
            "accessToken": token,
            "expireTime": crate::util::timestamp(now + lifetime as i64 * 1000),
        }))
    }

    /// Checks the `Authorization` header of an API call.
    pub fn check(&self, now: TimestampMs, authorization: Option<&str>) -> Result<(), ApiError> {
        if !self.require_auth {
            return Ok(());
        }
        let unauth = |why: &str| {
            ApiError::unauthenticated(format!(
                "Request had invalid authentication credentials ({why}). Expected OAuth 2 access token, login cookie or other valid authentication credential."
            ))
        };
        let header = authorization.ok_or_else(|| unauth("no Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauth("Authorization is not a Bearer token"))?
            .trim();
        if let Some(expiry) = self.tokens.get(token) {
            if *expiry > now {
                return Ok(());
            }
            return Err(unauth("access token expired"));
        }
        if self.accept_self_signed_jwt && token.matches('.').count() == 2 {
            return check_jwt(token, false).map(|_| ()).map_err(|e| unauth(&e));
        }
        Err(unauth("unknown access token"))
    }
}

/// Checks a JWT's shape and claims (the signature is not verified: the fake
/// holds no keys). `for_exchange`: an assertion posted to the token endpoint
/// (needs `aud` = the token URI and `scope`); otherwise a self-signed access
/// token (needs `scope` or `aud`).
pub fn check_jwt(token: &str, for_exchange: bool) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("JWT must have three parts".into());
    };
    let decode = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| format!("JWT {what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| format!("JWT {what} is not JSON"))
    };
    let header = decode(h, "header")?;
    let claims = decode(c, "claims")?;
    if sig.is_empty() {
        return Err("JWT has no signature".into());
    }
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("JWT alg must be RS256".into());
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if !iss.contains('@') {
        return Err("JWT iss must be a service account email".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("JWT has no exp")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("JWT has no iat")?;
    if exp <= now {
        return Err("JWT expired".into());
    }
    if iat > now + 300 {
        return Err("JWT issued in the future".into());
    }
    if exp - iat > 3600 + 120 {
        return Err("JWT lifetime exceeds one hour".into());
    }
    let scope = claims.get("scope").and_then(Value::as_str);
    let aud = claims.get("aud").and_then(Value::as_str);
    if for_exchange {
        if aud.is_none() {
            return Err("JWT assertion has no aud".into());
        }
        if scope.is_none() {
            return Err("JWT assertion has no scope".into());
        }
    } else if scope.is_none() && aud.is_none() {
        return Err("self-signed JWT needs a scope or an aud".into());
    }
    if let Some(scope) = scope {
        if !scope.split(' ').any(|s| s == CLOUD_PLATFORM_SCOPE) {
            return Err(format!("JWT scope {scope:?} lacks {CLOUD_PLATFORM_SCOPE}"));
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{h}.{c}.c2ln")
    }

    fn now_secs() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn issued_token_accepted_until_expiry() {
        let mut a = AuthState::new("p");
        let t = a.metadata_token(1000);
        let tok = t["access_token"].as_str().unwrap().to_string();
        assert!(a.check(2000, Some(&format!("Bearer {tok}"))).is_ok());
        assert!(a
            .check(1000 + 3_599_000, Some(&format!("Bearer {tok}")))
            .is_err());
        assert!(a.check(2000, None).is_err());
        assert!(a.check(2000, Some("Bearer nope")).is_err());
    }

    #[test]
    fn self_signed_jwt_checked() {
        let a = AuthState::new("p");
        let n = now_secs();
        let good = jwt(
            json!({"iss":"sa@p.iam.gserviceaccount.com","sub":"sa@p.iam.gserviceaccount.com","scope":CLOUD_PLATFORM_SCOPE,"iat":n-10,"exp":n+3590}),
        );
        assert!(a.check(0, Some(&format!("Bearer {good}"))).is_ok());
        let expired =
            jwt(json!({"iss":"sa@p","scope":CLOUD_PLATFORM_SCOPE,"iat":n-4000,"exp":n-400}));
        assert!(a.check(0, Some(&format!("Bearer {expired}"))).is_err());
        let wrong_scope = jwt(
            json!({"iss":"sa@p","scope":"https://www.googleapis.com/auth/logging.read","iat":n,"exp":n+60}),
        );
        assert!(a.check(0, Some(&format!("Bearer {wrong_scope}"))).is_err());
    }

    #[test]
    fn oauth_refresh_grant() {
        let mut a = AuthState::new("p");
        let ok = a.oauth_token(0, br#"{"grant_type":"refresh_token","client_id":"c","client_secret":"s","refresh_token":"r"}"#);
        assert!(ok.is_ok());
        let err = a.oauth_token(0, b"grant_type=password").unwrap_err();
        assert_eq!(err.1["error"], "unsupported_grant_type");
    }
}
