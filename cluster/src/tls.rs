//! TLS on the internal Flight service: the server's identity and what its
//! one client trusts. The per-call signatures (`call_auth`) still
//! authenticate every call; TLS keeps what the calls carry (events, query
//! fragments and their results) from being read or changed on the way.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Clone)]
pub struct InternalTls {
    identity: Identity,
    trusted: Certificate,
    server_name: Option<String>,
}

impl InternalTls {
    /// `cert_pem`/`key_pem`: this node's certificate and key; `ca_pem`: the
    /// certificates its peers' must chain to; `server_name`: the name their
    /// certificates carry (None: the host of the peer's Flight address,
    /// which then needs an IP or DNS entry for it).
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        server_name: Option<String>,
    ) -> InternalTls {
        InternalTls {
            identity: Identity::from_pem(cert_pem, key_pem),
            trusted: Certificate::from_pem(ca_pem),
            server_name,
        }
    }

    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone())
    }

    pub fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(self.trusted.clone());
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}
