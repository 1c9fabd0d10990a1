//! OTLP over gRPC (`TraceService`, `LogsService`) on `--otlp-grpc-addr`:
//! what OpenTelemetry exporters and collectors send by default. The same
//! door as OTLP/HTTP behind another transport: the key from the call's
//! metadata through the HTTP guard's check, the same rows
//! (`atoll_ingest::otlp`), the same store (`http::otlp::store_tables`),
//! errors as the gRPC codes their kinds have between nodes.

use std::sync::Arc;
use std::time::Instant;

use atoll_auth::Need;
use atoll_errors::ErrorKind;
use atoll_ingest::IngestError;
use atoll_ingest::otlp::{self, TableEvents};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::http::guard::Guard;
use crate::http::ingest::IngestState;
use crate::http::{ApiError, status};

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[derive(Clone)]
pub struct OtlpGrpc {
    pub ingest: IngestState,
    pub guard: Arc<Guard>,
}

impl OtlpGrpc {
    /// Both services, taking messages up to `--max-body-bytes`, each call's
    /// key checked before its message is read (`Keyed`).
    pub fn services(
        self,
    ) -> (
        Keyed<TraceServiceServer<OtlpGrpc>>,
        Keyed<LogsServiceServer<OtlpGrpc>>,
    ) {
        let limit = self.ingest.ingest.max_body_bytes;
        let guard = self.guard.clone();
        (
            Keyed {
                inner: TraceServiceServer::new(self.clone()).max_decoding_message_size(limit),
                guard: guard.clone(),
            },
            Keyed {
                inner: LogsServiceServer::new(self).max_decoding_message_size(limit),
                guard,
            },
        )
    }

    /// Authenticates, stores and counts one export; how many items were
    /// refused and the first reason.
    async fn export<T: Message + Send + 'static>(
        &self,
        request: Request<T>,
        path: &str,
        rows: fn(T, usize) -> Result<Vec<TableEvents>, IngestError>,
    ) -> Result<(i64, String), Status> {
        let started = Instant::now();
        let outcome = self.store(request, path, rows).await;
        let code = match &outcome {
            Ok(_) => 200,
            Err(e) => status(e.kind()).as_u16(),
        };
        self.ingest.count_status(started, code);
        outcome.map_err(|e| {
            let status = Status::new(atoll_cluster::error::code(e.kind()), e.to_string());
            if e.kind() == ErrorKind::Internal {
                tracing::error!(error = %e, "internal error answered");
            }
            status
        })
    }

    async fn store<T: Message + Send + 'static>(
        &self,
        request: Request<T>,
        path: &str,
        rows: fn(T, usize) -> Result<Vec<TableEvents>, IngestError>,
    ) -> Result<(i64, String), ApiError> {
        // Checked before the message was read (`Keyed`); the caller again
        // from the same metadata (tonic does not carry a layer's
        // extensions into the request).
        let headers = request.metadata().clone().into_headers();
        let caller = self.guard.caller(&headers, path)?;
        let turn = self.ingest.ingest.turn().await?;
        let message = request.into_inner();
        let size = message.encoded_len();
        let limit = crate::http::otlp::rows_limit(&self.ingest);
        let tables = tokio::task::spawn_blocking(move || rows(message, limit))
            .await
            .map_err(|e| IngestError::task_failed("reading an OTLP export", e))??;
        crate::http::otlp::store_tables(&self.ingest, &caller, tables, size, &turn).await
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let (refused, message) = OtlpGrpc::export(self, request, TRACES, otlp::span_rows).await?;
        let partial = refused > 0 || !message.is_empty();
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial.then_some(ExportTracePartialSuccess {
                rejected_spans: refused,
                error_message: message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let (refused, message) = OtlpGrpc::export(self, request, LOGS, otlp::log_rows).await?;
        let partial = refused > 0 || !message.is_empty();
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial.then_some(ExportLogsPartialSuccess {
                rejected_log_records: refused,
                error_message: message,
            }),
        }))
    }
}

/// A service whose calls are authenticated from their metadata before
/// tonic reads their message (a message may be as large as
/// `--max-body-bytes`: only a caller with an ingest key gets that far),
/// through the HTTP guard's one check.
#[derive(Clone)]
pub struct Keyed<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S: NamedService> NamedService for Keyed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for Keyed<S>
where
    S: tower::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let checked = self
            .guard
            .caller(request.headers(), &path)
            .and_then(|caller| caller.may(Need::IngestSomewhere).map(|()| caller));
        match checked {
            Ok(_) => Box::pin(self.inner.call(request)),
            Err(e) => {
                let kind = atoll_errors::Classified::kind(&e);
                let status = Status::new(atoll_cluster::error::code(kind), e.to_string());
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
