//! The internal Arrow Flight service, the one way into a node from its
//! peers: replica writes (`do_put`), query fragments (`do_get`), table
//! schemas (`get_schema`), and handoff and table changes (`do_action`).
//! Every call must be signed with the cluster's key and carry this node's protocol
//! version; everything it refuses is answered through `error::status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use atoll_errors::Classified;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use tonic::codegen::{Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use crate::call_auth::{CallCheck, CallKey};
use crate::client::MAX_MESSAGE_BYTES;
use crate::error::{ClusterError, status};
use crate::messages::{
    ACTION_LIVE, ACTION_MISSED, ACTION_TABLE_CHANGE, ACTION_TABLE_ROWS, ChangeApplied,
    FragmentStats, MissedNoted, MissedReport, PROTOCOL_HEADER, PROTOCOL_VERSION, PutDescriptor,
    TableChange, TableRows, decode, encode,
};
use crate::replica::{LocalReplica, read_put};

/// Runs the query fragments peers send. The query engine implements it;
/// the cluster only carries the bytes of a fragment and its answer.
pub trait FragmentRunner: Send + Sync + 'static {
    /// Decodes, checks and starts a fragment.
    fn start(&self, ticket: &[u8]) -> Result<RunningFragment, Box<dyn Classified + Send + Sync>>;
}

/// A fragment under way on this node.
pub struct RunningFragment {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch, Box<dyn std::error::Error + Send + Sync>>>,
    /// The coordinator's time limit for it.
    pub timeout: Duration,
    /// Called after its last batch: what it read. Dropping it unrun (the
    /// coordinator went away) stops the fragment.
    pub finish: Box<dyn FnOnce() -> u64 + Send>,
}

pub struct InternalService {
    pub local: Arc<LocalReplica>,
    pub fragments: Arc<dyn FragmentRunner>,
    /// Compiles live subscriptions (the query engine).
    pub live: Arc<dyn crate::live::LiveRunner>,
    /// `atoll_fragments_total{outcome}`.
    pub fragment_outcomes: prometheus::IntCounterVec,
}

/// Counts a fragment as completed once its last message is made, and as
/// cancelled when its response is dropped before that.
struct FragmentOutcome {
    counter: prometheus::IntCounterVec,
    completed: bool,
}

impl Drop for FragmentOutcome {
    fn drop(&mut self) {
        let outcome = if self.completed {
            "completed"
        } else {
            "cancelled"
        };
        self.counter.with_label_values(&[outcome]).inc();
    }
}

/// The service behind the check of every call: signed with the cluster's
/// key for its method (`call_auth`), and of this node's protocol version.
pub fn service(
    flight: InternalService,
    secret: String,
    flight_addr: String,
) -> Checked<FlightServiceServer<InternalService>> {
    let server = FlightServiceServer::new(flight)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Checked {
        inner: server,
        check: Arc::new(CallCheck::new(CallKey::new(&secret), flight_addr)),
    }
}

/// A gRPC service whose calls are checked before they reach it (an
/// interceptor cannot see which method is called, and the signature
/// covers it).
#[derive(Clone)]
pub struct Checked<S> {
    inner: S,
    check: Arc<CallCheck>,
}

impl<S: NamedService> NamedService for Checked<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Checked<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match refusal(&self.check, request.uri().path(), request.headers()) {
            None => Box::pin(self.inner.call(request)),
            Some(status) => {
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// Why a call is refused, as the status its caller gets.
fn refusal(check: &CallCheck, method: &str, headers: &http::HeaderMap) -> Option<Status> {
    if let Err(why) = check.verify(method, headers) {
        return Some(Status::unauthenticated(why));
    }
    let theirs = headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)");
    if theirs != PROTOCOL_VERSION.to_string() {
        let refused = ClusterError::Protocol {
            theirs: theirs.to_string(),
            ours: PROTOCOL_VERSION,
        };
        return Some(status(&refused));
    }
    None
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not part of Atoll's internal protocol"
    )))
}

#[tonic::async_trait]
impl FlightService for InternalService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("handshake")
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("list_flights")
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("get_flight_info")
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("poll_flight_info")
    }
    /// A table's schema and settings (descriptor path `["table", NAME]`),
    /// for nodes that learn of it by gossip.
    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let name = match request.get_ref().path.as_slice() {
            [kind, name] if kind == "table" => name,
            _ => {
                return Err(Status::invalid_argument(
                    "expected the path [\"table\", NAME]",
                ));
            }
        };
        let table = self
            .local
            .store
            .table(name)
            .ok_or_else(|| Status::not_found(format!("no table {name:?}")))?;
        Ok(Response::new(crate::schemas::schema_result(&table)?))
    }
    /// A query fragment from a coordinator: Atoll's own plan nodes only,
    /// run over this node's partitions, answered as Arrow, then a last
    /// message with what it read.
    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner().ticket;
        let started = std::time::Instant::now();
        let outcomes = self.fragment_outcomes.clone();
        let running = self.fragments.start(&ticket).map_err(|e| {
            outcomes.with_label_values(&["refused"]).inc();
            status(e.as_ref())
        })?;
        let outcome = FragmentOutcome {
            counter: outcomes,
            completed: false,
        };
        let timeout = running.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let batches = running.batches.map_err(FlightError::ExternalError);
        let batches = tokio_stream::StreamExt::timeout_repeating(
            batches,
            tokio::time::interval_at(deadline, timeout),
        )
        .map(|item| {
            item.unwrap_or_else(|_| {
                Err(FlightError::ProtocolError(
                    "the fragment ran past its deadline".into(),
                ))
            })
        });
        let schema = running.schema;
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema.clone())
            .build(batches);
        // The figures ride on a repeated schema message: a message without
        // an IPC header is not valid Flight data.
        let finish = running.finish;
        let tail = stream::once(async move {
            let mut outcome = outcome;
            outcome.completed = true;
            let rows_scanned = finish();
            let elapsed_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
            let stats = FragmentStats {
                rows_scanned,
                elapsed_ms,
            };
            let mut message: FlightData = arrow_flight::SchemaAsIpc::new(
                &schema,
                &arrow::ipc::writer::IpcWriteOptions::default(),
            )
            .into();
            message.app_metadata = encode(&stats)?.into();
            Ok(message)
        });
        let out = encoded
            .map_err(|e| status(&ClusterError::Internal(e.to_string())))
            .chain(tail);
        Ok(Response::new(Box::pin(out)))
    }

    /// A replica write: one partition's rows as this node's own data (what
    /// handoff sends), or several partitions' rows at once, each as own
    /// data or as a hint for a down primary (`PutMany`, what a coordinator
    /// sends), whose answer names the parts that failed.
    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let (descriptor, mut batches) = read_put(request.into_inner()).await?;
        // The sender's encoder may split one write into several messages:
        // they are one write (one id), stored together or not at all.
        let batch = match batches.len() {
            0 => return Err(Status::invalid_argument("a do_put without rows")),
            1 => batches.pop().expect("one batch"),
            _ => arrow::compute::concat_batches(&batches[0].schema(), &batches).map_err(|e| {
                Status::invalid_argument(format!("the batches of one write differ: {e}"))
            })?,
        };
        let answer = match descriptor {
            PutDescriptor::One(cmd) => {
                self.local.write(&cmd, batch, None).await?;
                PutResult::default()
            }
            PutDescriptor::Many(many) => {
                let failed = self.local.write_many(&many, &batch).await?;
                PutResult {
                    app_metadata: encode(&failed)?.into(),
                }
            }
        };
        let done: BoxStream<'static, Result<PutResult, Status>> =
            Box::pin(stream::iter([Ok(answer)]));
        Ok(Response::new(done))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("do_exchange")
    }
    /// Handoff between replicas (which tables and writes this node holds,
    /// the rows of some writes: see `handoff`), and table changes made
    /// through another node (see `tables`).
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type == ACTION_LIVE {
            let tap = self
                .live
                .start(&action.body)
                .map_err(|e| status(e.as_ref()))?;
            let registered = self.local.taps.register(tap).map_err(|e| status(&e))?;
            let answers = crate::live::answers(registered)
                .map(|body| Ok(arrow_flight::Result { body: body.into() }));
            return Ok(Response::new(Box::pin(answers)));
        }
        let bodies = match action.r#type.as_str() {
            ACTION_TABLE_CHANGE => {
                let change: TableChange = decode(&action.body)?;
                let applied = crate::tables::apply(&self.local, &change).await?;
                vec![encode(&ChangeApplied { applied })?.into()]
            }
            ACTION_TABLE_ROWS => {
                let request: TableRows = decode(&action.body)?;
                vec![encode(&crate::tables::rows_here(&self.local, &request))?.into()]
            }
            ACTION_MISSED => {
                let report: MissedReport = decode(&action.body)?;
                let noted = self.local.relay_missed(report).await;
                vec![encode(&MissedNoted { noted })?.into()]
            }
            _ => {
                let store = self.local.store.clone();
                tokio::task::spawn_blocking(move || crate::handoff::serve_action(&store, &action))
                    .await
                    .map_err(|e| status(&ClusterError::Internal(e.to_string())))??
            }
        };
        let results = bodies
            .into_iter()
            .map(|body| Ok(arrow_flight::Result { body }));
        Ok(Response::new(Box::pin(stream::iter(results))))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("list_actions")
    }
}
