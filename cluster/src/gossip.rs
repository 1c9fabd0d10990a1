//! The socket gossip runs on, and the authentication of every datagram.
//!
//! chitchat checks the cluster id only on `Syn` and applies the deltas of
//! any `SynAck` or `Ack` it receives: anyone who could send UDP to a node
//! could rewrite its view of the ring, drop tables or impersonate nodes.
//! So every datagram carries, after chitchat's bytes, the time it was sent
//! and an HMAC-SHA256 of both under a key derived from the cluster secret;
//! a datagram is dropped (and counted) before chitchat reads it when its
//! tag is wrong, its time is more than [`WINDOW`] from this node's clock,
//! or the same datagram was already received in the window (a replay).
//!
//! Atoll binds the socket before chitchat starts, so a node asked for port
//! 0 gets a port from the system and advertises the one it got.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use crate::call_auth::now_ms;
use crate::replay::Seen;

/// How far a datagram's time may be from the receiver's clock.
pub const WINDOW: Duration = Duration::from_secs(60);
const TIME_BYTES: usize = 8;
const TAG_BYTES: usize = 32;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
const _: () = assert!(TIME_BYTES + TAG_BYTES <= chitchat::TRANSPORT_RESERVED_BYTES);

/// Why datagrams were dropped, for `/metrics`.
#[derive(Clone)]
pub struct GossipDrops(prometheus::IntCounterVec);

impl GossipDrops {
    fn new() -> GossipDrops {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "atoll_gossip_dropped_total",
                "Gossip datagrams dropped before reading: bad tag (not signed with this cluster's key), stale, replayed, malformed",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        GossipDrops(counter)
    }

    /// The counter, for the node's registry.
    pub fn counter(&self) -> prometheus::IntCounterVec {
        self.0.clone()
    }

    fn count(&self, reason: &str) {
        self.0.with_label_values(&[reason]).inc();
    }
}

/// Seals and opens datagrams with the cluster's gossip key.
pub struct Sealer {
    key: [u8; 32],
    /// Tags received within the window.
    seen: Mutex<Seen<[u8; TAG_BYTES]>>,
}

impl Sealer {
    pub fn new(secret: &str) -> Sealer {
        Sealer {
            key: crate::call_auth::derive(secret, b"atoll gossip v1"),
            seen: Mutex::default(),
        }
    }

    fn tag(&self, payload: &[u8], ms: i64) -> [u8; TAG_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload);
        mac.update(&ms.to_le_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Appends the time `ms` and the tag to chitchat's bytes.
    pub fn seal(&self, datagram: &mut Vec<u8>, ms: i64) {
        let tag = self.tag(datagram, ms);
        datagram.extend_from_slice(&ms.to_le_bytes());
        datagram.extend_from_slice(&tag);
    }

    /// chitchat's bytes of a datagram received at `now_ms`, or why it is
    /// dropped.
    pub fn open<'a>(&self, datagram: &'a [u8], now_ms: i64) -> Result<&'a [u8], &'static str> {
        let Some(body_len) = datagram.len().checked_sub(TIME_BYTES + TAG_BYTES) else {
            return Err("malformed");
        };
        let (payload, rest) = datagram.split_at(body_len);
        let (time, tag) = rest.split_at(TIME_BYTES);
        let ms = i64::from_le_bytes(time.try_into().expect("8 bytes"));
        let expected = self.tag(payload, ms);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err("bad_tag");
        }
        let window = WINDOW.as_millis() as i64;
        if (now_ms - ms).abs() > window {
            return Err("stale");
        }
        if !self.seen.lock().insert(expected, ms + window, now_ms) {
            return Err("replayed");
        }
        Ok(payload)
    }
}

/// When this node last heard its cluster: the last datagram that opened
/// with the cluster's key. A node that hears nobody while it still thinks
/// others are up does not know what they reported since (`Membership::
/// deaf`).
#[derive(Clone)]
pub struct LastHeard {
    since: std::time::Instant,
    /// ms after `since`.
    at: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LastHeard {
    fn new() -> LastHeard {
        LastHeard {
            since: std::time::Instant::now(),
            at: Default::default(),
        }
    }

    fn now(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.at.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the last datagram of the cluster arrived (since the
    /// transport was bound, when none did).
    pub fn ago(&self) -> std::time::Duration {
        let at = self.at.load(std::sync::atomic::Ordering::Relaxed);
        self.since
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(at))
    }
}

/// A UDP socket bound ahead of chitchat, handed to it once.
pub struct GossipTransport {
    socket: Mutex<Option<tokio::net::UdpSocket>>,
    addr: SocketAddr,
    sealer: std::sync::Arc<Sealer>,
    drops: GossipDrops,
    heard: LastHeard,
}

impl GossipTransport {
    pub async fn bind(addr: SocketAddr, secret: &str) -> anyhow::Result<GossipTransport> {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind UDP {addr} for gossip"))?;
        Ok(GossipTransport {
            addr: socket.local_addr()?,
            socket: Mutex::new(Some(socket)),
            sealer: std::sync::Arc::new(Sealer::new(secret)),
            drops: GossipDrops::new(),
            heard: LastHeard::new(),
        })
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn drops(&self) -> GossipDrops {
        self.drops.clone()
    }

    pub fn heard(&self) -> LastHeard {
        self.heard.clone()
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
        let socket = self
            .socket
            .lock()
            .take()
            .context("the gossip socket was already opened")?;
        Ok(Box::new(GossipSocket {
            socket,
            sealer: self.sealer.clone(),
            drops: self.drops.clone(),
            heard: self.heard.clone(),
            send: Vec::with_capacity(MAX_DATAGRAM),
            recv: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct GossipSocket {
    socket: tokio::net::UdpSocket,
    sealer: std::sync::Arc<Sealer>,
    drops: GossipDrops,
    heard: LastHeard,
    send: Vec<u8>,
    recv: Box<[u8]>,
}

#[async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.send.clear();
        envelope.serialize(&mut self.send);
        self.sealer.seal(&mut self.send, now_ms());
        let num_bytes_sent = self
            .socket
            .send_to(&self.send, to)
            .await
            .with_context(|| format!("cannot send gossip to {to}"))?;
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancellable: chitchat drops it between datagrams.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (len, from_addr) = match self.socket.recv_from(&mut self.recv).await {
                Ok(got) => got,
                // A peer gone away (ICMP unreachable), or a short squeeze.
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e).context("the gossip socket failed"),
            };
            let mut payload = match self.sealer.open(&self.recv[..len], now_ms()) {
                Ok(payload) => payload,
                Err(reason) => {
                    self.drops.count(reason);
                    tracing::debug!(from = %from_addr, reason, "gossip datagram dropped");
                    continue;
                }
            };
            match ChitchatEnvelope::deserialize(&mut payload) {
                Ok(envelope) => {
                    self.heard.now();
                    return Ok(RecvOutcome {
                        from_addr,
                        envelope,
                        num_bytes_received: len,
                    });
                }
                Err(e) => {
                    self.drops.count("malformed");
                    tracing::debug!(from = %from_addr, error = %e, "unreadable gossip datagram");
                }
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_zero_is_bound_once_and_reported() {
        let t = GossipTransport::bind("127.0.0.1:0".parse().unwrap(), "s")
            .await
            .unwrap();
        assert_ne!(t.local_addr().port(), 0);
        let socket = t.open(t.local_addr()).await.unwrap();
        assert_eq!(socket.local_addr().unwrap(), t.local_addr());
        assert!(t.open(t.local_addr()).await.is_err(), "one socket, once");
    }

    #[test]
    fn only_sealed_fresh_first_datagrams_open() {
        let ours = Sealer::new("secret");
        let now = now_ms();
        // A datagram as full as chitchat makes one still fits UDP.
        let mut full = vec![7u8; MAX_DATAGRAM - chitchat::TRANSPORT_RESERVED_BYTES];
        ours.seal(&mut full, now);
        assert!(full.len() <= MAX_DATAGRAM);
        assert_eq!(ours.open(&full, now).unwrap().len(), MAX_DATAGRAM - 64);
        assert_eq!(ours.open(&full, now), Err("replayed"));
        let mut forged = b"a delta that drops a table".to_vec();
        Sealer::new("guess").seal(&mut forged, now);
        assert_eq!(ours.open(&forged, now), Err("bad_tag"));
        let mut changed = b"hello".to_vec();
        ours.seal(&mut changed, now);
        changed[0] ^= 1;
        assert_eq!(ours.open(&changed, now), Err("bad_tag"));
        let mut old = b"hello".to_vec();
        ours.seal(&mut old, now - 2 * WINDOW.as_millis() as i64);
        assert_eq!(ours.open(&old, now), Err("stale"));
        assert_eq!(ours.open(b"short", now), Err("malformed"));
    }
}
