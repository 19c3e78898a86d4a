//! Webhook delivery: POST the v4 payload, optionally signed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::receivers::WebhookConfig;
use crate::config::Secret;
use crate::notify::DeliveryError;

pub const SIGNATURE_HEADER: &str = "X-Rearguard-Signature";

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A client for webhooks (no redirects followed: a webhook that redirects is misconfigured).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rearguard/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Posts `body`. 2xx is success; 408, 429 and 5xx and transport errors are
/// worth retrying; any other status is permanent.
pub async fn post(
    client: &reqwest::Client,
    cfg: &WebhookConfig,
    hmac_secret: Option<&Secret>,
    body: Vec<u8>,
) -> Result<(), DeliveryError> {
    let mut req = client
        .post(&cfg.url)
        .timeout(cfg.timeout())
        .header(http::header::CONTENT_TYPE, "application/json");
    for (k, v) in &cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(s) = hmac_secret {
        req = req.header(SIGNATURE_HEADER, signature(s, &body));
    }
    // Errors never carry the URL: webhook URLs often embed a token.
    let resp = req.body(body).send().await.map_err(|e| {
        DeliveryError::transient(format!("webhook request failed: {}", e.without_url()))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let snippet: String = text.chars().take(200).collect();
    let msg = format!("webhook answered {status}: {snippet}");
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(DeliveryError::transient(msg))
    } else {
        Err(DeliveryError::permanent(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_known_hmac() {
        // RFC 4231 test case 2.
        let s = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
