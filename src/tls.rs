//! TLS setup shared by every HTTPS and SMTP client.

/// Installs ring as rustls's process-wide crypto provider (once; later calls
/// do nothing). Call before building a client: reqwest panics without one.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
