//! TLS on the internal Flight service: the server's identity and what its
//! one client trusts. The per-call signatures (`call_auth`) still
//! authenticate every call; TLS keeps what the calls carry (events, query
//! fragments and their results) from being read or changed on the way.

use tonic::transport::{Certificate, ClientTlsConfig};

/// What a node's Flight client trusts (the node serves with its own
/// certificate, through `atoll-node`'s TLS listener).
#[derive(Clone)]
pub struct InternalTls {
    trusted: Certificate,
    server_name: Option<String>,
}

impl InternalTls {
    /// `ca_pem`: the certificates its peers' must chain to; `server_name`:
    /// the name their certificates carry (None: the host of the peer's
    /// Flight address, which then needs an IP or DNS entry for it).
    pub fn new(ca_pem: &[u8], server_name: Option<String>) -> InternalTls {
        InternalTls {
            trusted: Certificate::from_pem(ca_pem),
            server_name,
        }
    }

    pub fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(self.trusted.clone());
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}
