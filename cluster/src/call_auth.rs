//! How a node proves an internal call comes from a node of its cluster,
//! without the cluster secret ever travelling.
//!
//! Each call carries `x-atoll-call: <unix ms>.<nonce>.<tag>`, where the tag
//! is an HMAC-SHA256, under a key derived from the cluster secret, of the
//! call's gRPC method, the receiving node's Flight address (as the caller
//! dials it and the receiver advertises it), the time and the nonce. The
//! receiving node checks the tag in constant time, refuses a time more
//! than [`WINDOW`] away from its own clock, and refuses a nonce it saw
//! within the window: a call cannot be forged without the secret, moved to
//! another method or another node, or replayed. (A tag does not cover the
//! body: on a network that can change bodies in flight, use
//! `--internal-tls`.)

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tonic::codegen::http::HeaderMap;

use crate::replay::Seen;

/// gRPC metadata carrying a call's proof.
pub const CALL_HEADER: &str = "x-atoll-call";

/// How far a call's time may be from the receiver's clock.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The key calls are signed with, derived from the cluster secret (the
/// secret itself signs nothing, so keys for other uses stay apart).
#[derive(Clone)]
pub struct CallKey(Arc<[u8; 32]>);

impl CallKey {
    pub fn new(secret: &str) -> CallKey {
        CallKey(Arc::new(derive(secret, b"atoll internal calls v1")))
    }

    /// The header value for a call of `method` (its gRPC path) to the node
    /// whose Flight address is `receiver`, now.
    pub fn sign(&self, method: &str, receiver: &str) -> String {
        let nonce: u64 = rand::random();
        let ms = now_ms();
        let tag = self.tag(method, receiver, ms, nonce);
        format!("{ms}.{nonce:016x}.{}", hex(&tag))
    }

    fn tag(&self, method: &str, receiver: &str, ms: i64, nonce: u64) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0[..]).expect("any key length");
        mac.update(format!("{method}\n{receiver}\n{ms}\n{nonce:016x}").as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A key for one use, from the cluster secret.
pub fn derive(secret: &str, purpose: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().into()
}

/// Checks the calls made to one node (`me`: its advertised Flight
/// address), remembering the nonces of the window.
pub struct CallCheck {
    key: CallKey,
    me: String,
    seen: Mutex<Seen<u64>>,
}

impl CallCheck {
    pub fn new(key: CallKey, me: String) -> CallCheck {
        CallCheck {
            key,
            me,
            seen: Mutex::default(),
        }
    }

    /// Why a call is refused, if it is.
    pub fn verify(&self, method: &str, headers: &HeaderMap) -> Result<(), &'static str> {
        let value = headers
            .get(CALL_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("the call is not signed with the cluster's key")?;
        let mut parts = value.split('.');
        let (Some(ms), Some(nonce), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the call's signature is malformed");
        };
        let ms: i64 = ms
            .parse()
            .map_err(|_| "the call's signature is malformed")?;
        let nonce =
            u64::from_str_radix(nonce, 16).map_err(|_| "the call's signature is malformed")?;
        let expected = hex(&self.key.tag(method, &self.me, ms, nonce));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            tag.as_bytes(),
        )) {
            return Err(
                "the call's signature is wrong (another cluster secret, or meant for another node?)",
            );
        }
        let now = now_ms();
        let window = WINDOW.as_millis() as i64;
        if (now - ms).abs() > window {
            return Err("the call's time is outside the window (are the nodes' clocks apart?)");
        }
        if !self.seen.lock().insert(nonce, ms + window, now) {
            return Err("the call was replayed");
        }
        Ok(())
    }
}

/// The wall clock in ms since the epoch, as signatures carry it.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CALL_HEADER, value.parse().unwrap());
        h
    }

    #[test]
    fn a_signed_call_passes_once_and_only_for_its_method() {
        let key = CallKey::new("secret");
        let check = CallCheck::new(key.clone(), "10.0.0.1:7071".into());
        let signed = key.sign(
            "/arrow.flight.protocol.FlightService/DoGet",
            "10.0.0.1:7071",
        );
        assert!(
            check
                .verify(
                    "/arrow.flight.protocol.FlightService/DoPut",
                    &headers(&signed)
                )
                .is_err()
        );
        assert_eq!(
            check.verify(
                "/arrow.flight.protocol.FlightService/DoGet",
                &headers(&signed)
            ),
            Ok(())
        );
        assert_eq!(
            check.verify(
                "/arrow.flight.protocol.FlightService/DoGet",
                &headers(&signed)
            ),
            Err("the call was replayed")
        );
        let other = CallCheck::new(CallKey::new("another secret"), "10.0.0.1:7071".into());
        assert!(
            other
                .verify("/x", &headers(&key.sign("/x", "10.0.0.1:7071")))
                .unwrap_err()
                .contains("wrong")
        );
        // A call made to another node is refused here.
        let elsewhere = key.sign("/x", "10.0.0.2:7071");
        assert!(
            check
                .verify("/x", &headers(&elsewhere))
                .unwrap_err()
                .contains("another node")
        );
        assert!(check.verify("/x", &HeaderMap::new()).is_err());
        // An old call, correctly signed, is outside the window.
        let ms = now_ms() - 2 * WINDOW.as_millis() as i64;
        let tag = key.tag("/x", "10.0.0.1:7071", ms, 7);
        let stale = format!("{ms}.{:016x}.{}", 7u64, hex(&tag));
        assert!(
            check
                .verify("/x", &headers(&stale))
                .unwrap_err()
                .contains("window")
        );
    }
}
