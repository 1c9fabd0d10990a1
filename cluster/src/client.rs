//! The one client of the internal Flight service: one connection per peer,
//! shared by every call to it (replica writes, handoff, schemas, table
//! changes and query fragments), and the one place that attaches the
//! call's proof of the cluster secret (`call_auth`) and the protocol
//! version to a call.

use std::collections::HashMap;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightData, FlightDescriptor, PutResult, SchemaResult, Ticket};
use futures::TryStreamExt;
use parking_lot::Mutex;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::call_auth::{CALL_HEADER, CallKey};
use crate::error::ClusterError;
use crate::messages::{FLIGHT_SERVICE, PROTOCOL_HEADER, PROTOCOL_VERSION};
use crate::tls::InternalTls;

/// How long a replica write, handoff or schema call may take before the
/// coordinator counts that replica as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message either side takes (a replica write of a large request).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

pub struct PeerClient {
    key: CallKey,
    /// One HTTP/2 connection per peer address. A connection per call cost
    /// a TCP and HTTP/2 handshake per node on every query. The connection
    /// window is large so that fragments whose reader is slow (a join
    /// working through its input) cannot starve the others sharing it;
    /// each stream keeps its own 2 MB window.
    channels: Mutex<HashMap<String, Channel>>,
    /// Set when the cluster runs Flight over TLS (`--internal-tls`).
    tls: Option<ClientTlsConfig>,
}

impl PeerClient {
    pub fn new(secret: String, tls: Option<&InternalTls>) -> PeerClient {
        PeerClient {
            key: CallKey::new(&secret),
            channels: Mutex::default(),
            tls: tls.map(InternalTls::client),
        }
    }

    fn connect(&self, addr: &str) -> Result<Channel, ClusterError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| ClusterError::unreachable(addr, e.to_string()))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| ClusterError::unreachable(addr, format!("TLS: {e}")))?;
        }
        Ok(endpoint
            .connect_timeout(Duration::from_secs(1))
            .initial_stream_window_size(2 << 20)
            .initial_connection_window_size(256 << 20)
            .connect_lazy())
    }

    fn client(&self, addr: &str) -> Result<FlightServiceClient<Channel>, ClusterError> {
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let channel = self.connect(addr)?;
                    channels.insert(addr.to_string(), channel.clone());
                    channel
                }
            }
        };
        Ok(FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Drops a peer's connection after a failed call, so that the next call
    /// connects afresh.
    fn forget(&self, addr: &str) {
        self.channels.lock().remove(addr);
    }

    /// A call's request: signed for `method` (`call_auth`; the secret
    /// itself never travels), the protocol version, and a timeout (None
    /// for query fragments, which carry their own deadline).
    fn request<T>(
        &self,
        addr: &str,
        method: &str,
        message: T,
        timeout: Option<Duration>,
    ) -> Result<tonic::Request<T>, ClusterError> {
        let mut request = tonic::Request::new(message);
        let signed = self
            .key
            .sign(&format!("/{FLIGHT_SERVICE}/{method}"), addr)
            .parse()
            .map_err(|_| ClusterError::Internal("a call's signature is not ASCII".into()))?;
        let metadata = request.metadata_mut();
        metadata.insert(CALL_HEADER, signed);
        metadata.insert(PROTOCOL_HEADER, PROTOCOL_VERSION.into());
        if let Some(t) = timeout {
            request.set_timeout(t);
        }
        Ok(request)
    }

    fn failed(&self, addr: &str, status: &tonic::Status) -> ClusterError {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) {
            self.forget(addr);
        }
        ClusterError::from_status(addr, status)
    }

    /// Runs a query fragment on a peer: its answer as a stream.
    pub async fn do_get(
        &self,
        addr: &str,
        ticket: Vec<u8>,
    ) -> Result<tonic::Streaming<FlightData>, ClusterError> {
        let request = self.request(addr, "DoGet", Ticket::new(ticket), None)?;
        match self.client(addr)?.do_get(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                // A fragment's failure is often the connection's: connect
                // afresh next time whatever it was.
                self.forget(addr);
                Err(ClusterError::from_status(addr, &s))
            }
        }
    }

    /// Sends a replica write (its frames, descriptor first).
    pub async fn do_put(
        &self,
        addr: &str,
        data: Vec<FlightData>,
    ) -> Result<Vec<PutResult>, ClusterError> {
        let request = self.request(
            addr,
            "DoPut",
            futures::stream::iter(data),
            Some(CALL_TIMEOUT),
        )?;
        let response = self
            .client(addr)?
            .do_put(request)
            .await
            .map_err(|s| self.failed(addr, &s))?;
        response
            .into_inner()
            .try_collect()
            .await
            .map_err(|s| self.failed(addr, &s))
    }

    /// Runs an action; its results as a stream (a fetch may be large).
    pub async fn do_action(
        &self,
        addr: &str,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<tonic::Streaming<arrow_flight::Result>, ClusterError> {
        self.action(addr, kind, body, Some(CALL_TIMEOUT)).await
    }

    /// Starts a long action (a live subscription): no deadline, it lasts
    /// until the stream is dropped or the peer ends it.
    pub async fn subscribe(
        &self,
        addr: &str,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<tonic::Streaming<arrow_flight::Result>, ClusterError> {
        self.action(addr, kind, body, None).await
    }

    async fn action(
        &self,
        addr: &str,
        kind: &str,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<tonic::Streaming<arrow_flight::Result>, ClusterError> {
        let action = Action {
            r#type: kind.to_string(),
            body: body.into(),
        };
        let request = self.request(addr, "DoAction", action, timeout)?;
        self.client(addr)?
            .do_action(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.failed(addr, &s))
    }

    /// Runs an action whose answer is one message.
    pub async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<T, ClusterError> {
        let first = self
            .do_action(addr, kind, body)
            .await?
            .try_next()
            .await
            .map_err(|s| self.failed(addr, &s))?
            .ok_or_else(|| ClusterError::BadMessage(format!("no answer to {kind}")))?;
        crate::messages::decode(&first.body)
    }

    /// A schema a peer holds; None when it has none by that descriptor.
    pub async fn get_schema(
        &self,
        addr: &str,
        descriptor: FlightDescriptor,
    ) -> Result<Option<SchemaResult>, ClusterError> {
        let request = self.request(addr, "GetSchema", descriptor, Some(CALL_TIMEOUT))?;
        match self.client(addr)?.get_schema(request).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.failed(addr, &s)),
        }
    }
}
