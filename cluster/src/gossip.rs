//! The socket gossip runs on. Atoll binds it before chitchat starts, so a
//! node asked for port 0 gets a port from the system and advertises the
//! one it got (nothing probes for a free port and lets it go).

use std::net::SocketAddr;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport, UdpSocket};
use parking_lot::Mutex;

/// A UDP socket bound ahead of chitchat, handed to it once.
pub struct GossipTransport {
    socket: Mutex<Option<Box<dyn Socket>>>,
    addr: SocketAddr,
}

impl GossipTransport {
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<GossipTransport> {
        let socket = UdpSocket::open(addr).await?;
        Ok(GossipTransport {
            addr: socket.local_addr()?,
            socket: Mutex::new(Some(Box::new(socket))),
        })
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

#[async_trait]
impl Transport for GossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        anyhow::ensure!(
            listen_addr == self.addr,
            "gossip was bound on {}, not {listen_addr}",
            self.addr
        );
        self.socket
            .lock()
            .take()
            .context("the gossip socket was already opened")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_zero_is_bound_once_and_reported() {
        let t = GossipTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_ne!(t.local_addr().port(), 0);
        let socket = t.open(t.local_addr()).await.unwrap();
        assert_eq!(socket.local_addr().unwrap(), t.local_addr());
        assert!(t.open(t.local_addr()).await.is_err(), "one socket, once");
    }
}
