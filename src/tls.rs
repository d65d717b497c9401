//! TLS set-up shared by every HTTP and SMTP client: one process-wide rustls
//! crypto provider (ring), installed once before the first client is built.

/// Installs ring as rustls' default crypto provider; later calls do nothing.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
