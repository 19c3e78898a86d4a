//! Webhook delivery: POST the v4 payload, optionally signed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::receivers::WebhookConfig;
use crate::config::Secret;
use crate::notify::DeliveryError;

pub const SIGNATURE_HEADER: &str = "X-Rearguard-Signature";
/// Unix seconds when the request was signed; covered by the signature so a
/// captured request cannot be replayed later with a fresh timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Rearguard-Timestamp";
/// The notification's deterministic id: the same on every retry, so a receiver
/// can drop the duplicate an at-least-once delivery may produce.
pub const DELIVERY_HEADER: &str = "X-Rearguard-Delivery";

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn signature(secret: &Secret, timestamp_s: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What identifies and signs one request.
pub struct Envelope<'a> {
    /// See [`DELIVERY_HEADER`].
    pub delivery_id: &'a str,
    pub now_ms: i64,
    pub hmac_secret: Option<&'a Secret>,
}

/// A client for webhooks (no redirects followed: a webhook that redirects is misconfigured).
pub fn client() -> reqwest::Client {
    crate::tls::ensure_crypto_provider();
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
    envelope: Envelope<'_>,
    body: Vec<u8>,
) -> Result<(), DeliveryError> {
    let mut req = client
        .post(&cfg.url)
        .timeout(cfg.timeout())
        .header(http::header::CONTENT_TYPE, "application/json");
    for (k, v) in &cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let timestamp_s = envelope.now_ms.div_euclid(1000);
    req = req
        .header(DELIVERY_HEADER, envelope.delivery_id)
        .header(TIMESTAMP_HEADER, timestamp_s.to_string());
    if let Some(s) = envelope.hmac_secret {
        req = req.header(SIGNATURE_HEADER, signature(s, timestamp_s, &body));
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
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Independently computed with
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac Jefe
        let body = br#"{"a":1}"#;
        assert_eq!(
            signature(&Secret::new("Jefe"), 1_700_000_000, body),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
        // The timestamp is covered: the same body a second later signs differently.
        assert_ne!(
            signature(&Secret::new("Jefe"), 1_700_000_001, body),
            signature(&Secret::new("Jefe"), 1_700_000_000, body)
        );
    }
}
