//! TLS for the sockets the relay (and the simulator) open: the Realtime API's, and a deployed
//! relay's `wss://` for `callkeeper simulate --target`.

use std::sync::{Arc, OnceLock};
use tokio_tungstenite::Connector;

/// rustls with ring and the webpki roots, built once per process.
pub fn connector() -> Connector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    Connector::Rustls(config.clone())
}
