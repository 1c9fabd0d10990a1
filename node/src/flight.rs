//! The internal Arrow Flight service: replicas receive writes with
//! `do_put`. Every call must carry the cluster secret.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use atoll_ingest::replica::{LocalReplica, PutDescriptor, read_put};
use atoll_ingest::replicate::SECRET_HEADER;
use atoll_query::QueryEngine;
use atoll_query::distributed::FragmentStats;
use atoll_query::scan::scan_totals;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

pub struct AtollFlight {
    pub local: Arc<LocalReplica>,
    pub engine: Arc<QueryEngine>,
    pub metrics: atoll_query::QueryMetrics,
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

/// The service behind a check of the cluster secret.
pub fn service(
    flight: AtollFlight,
    secret: String,
) -> InterceptedService<FlightServiceServer<AtollFlight>, impl tonic::service::Interceptor + Clone>
{
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        match req
            .metadata()
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(s) if s == secret => Ok(req),
            _ => Err(Status::unauthenticated("missing or wrong cluster secret")),
        }
    };
    let server = FlightServiceServer::new(flight)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    InterceptedService::new(server, check)
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not part of Atoll's internal protocol"
    )))
}

#[tonic::async_trait]
impl FlightService for AtollFlight {
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
        let path = &request.get_ref().path;
        let [kind, name] = path.as_slice() else {
            return Err(Status::invalid_argument(
                "expected the path [\"table\", NAME]",
            ));
        };
        if kind != "table" {
            return Err(Status::invalid_argument(
                "expected the path [\"table\", NAME]",
            ));
        }
        let table = self
            .local
            .store
            .table(name)
            .ok_or_else(|| Status::not_found(format!("no table {name:?}")))?;
        atoll_ingest::schemas::schema_result(&table)
            .map(Response::new)
            .map_err(Status::internal)
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
        let fragments = self.metrics.fragments.clone();
        let (plan, batches, guard, timeout) = self.engine.run_fragment(&ticket).map_err(|e| {
            fragments.with_label_values(&["refused"]).inc();
            Status::invalid_argument(e.to_string())
        })?;
        let outcome = FragmentOutcome {
            counter: fragments,
            completed: false,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let batches = tokio_stream::wrappers::ReceiverStream::new(batches)
            .map(|b| b.map_err(|e| FlightError::ExternalError(Box::new(e))));
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
        let schema = plan.schema();
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema.clone())
            .build(batches);
        // The figures ride on a repeated schema message: a message without
        // an IPC header is not valid Flight data.
        let tail = stream::once(async move {
            let _running = guard;
            let mut outcome = outcome;
            outcome.completed = true;
            let (rows_scanned, _) = scan_totals(&plan);
            let elapsed_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
            let stats = FragmentStats {
                rows_scanned,
                elapsed_ms,
            };
            let stats = serde_json::to_vec(&stats).unwrap_or_default();
            let mut message: FlightData = arrow_flight::SchemaAsIpc::new(
                &schema,
                &arrow::ipc::writer::IpcWriteOptions::default(),
            )
            .into();
            message.app_metadata = stats.into();
            Ok(message)
        });
        let out = encoded
            .map_err(|e| Status::internal(e.to_string()))
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
                self.local
                    .write(&cmd, batch, None)
                    .await
                    .map_err(Status::internal)?;
                PutResult::default()
            }
            PutDescriptor::Many(many) => {
                let failed = self
                    .local
                    .write_many(&many, &batch)
                    .await
                    .map_err(Status::invalid_argument)?;
                PutResult {
                    app_metadata: serde_json::to_vec(&failed)
                        .map_err(|e| Status::internal(e.to_string()))?
                        .into(),
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
    /// Handoff between replicas: which tables and writes this node holds,
    /// and the rows of some writes (see `atoll_ingest::handoff`).
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let store = self.local.store.clone();
        let action = request.into_inner();
        let bodies = tokio::task::spawn_blocking(move || {
            atoll_ingest::handoff::serve_action(&store, &action)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::invalid_argument)?;
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
