//! Arrow Flight SQL (`--flight-sql-addr`): the fast path for dataframes
//! (ADBC's Flight SQL driver, then pyarrow, pandas or polars), answers as
//! Arrow record batches straight from the engine. Queries take the same
//! path as `/v1/query` (`QueryEngine::start`: the sandbox, limits,
//! admission, the coverage plan, the key's scope) and are counted in the
//! same metrics; the key is checked by the HTTP API's guard, from the
//! `authorization: Bearer KEY` header (or a Basic handshake whose password
//! is the key, answered with the bearer token).
//!
//! Not the internal Flight service between nodes (`atoll-cluster`), which
//! stays on its own port behind the cluster secret.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use atoll_auth::{Caller, Need};
use atoll_errors::ErrorKind;
use atoll_query::engine::Execution;
use atoll_query::metrics::{Counted, QueryMetrics};
use atoll_query::{QueryEngine, ScalarValue, pg_catalog};
use atoll_store::Store;
use base64::Engine;
use futures::{Stream, TryStreamExt, stream};
use parking_lot::Mutex;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::http::guard::Guard;

/// The path the guard logs refusals under.
const PATH: &str = "/flight-sql";
const SCHEMA: &str = "public";

type DoGetStream = <FlightSqlDoor as FlightService>::DoGetStream;

pub struct FlightSqlDoor {
    engine: Arc<QueryEngine>,
    metrics: QueryMetrics,
    guard: Arc<Guard>,
    store: Arc<Store>,
    sql_info: SqlInfoData,
    waiting: Arc<Mutex<HashMap<u64, Waiting>>>,
    /// Places in the waiting room: taken before a query starts, so that at
    /// most `WAITING_MAX` wait whatever arrives at once.
    places: Arc<tokio::sync::Semaphore>,
}

/// Queries started at GetFlightInfo that wait for their DoGet: few (each
/// holds an admission slot), and not for long.
const WAITING_MAX: usize = 4;
const WAITING_FOR: Duration = Duration::from_secs(10);

struct Waiting {
    caller: Caller,
    execution: Execution,
    counted: Counted,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl FlightSqlDoor {
    pub fn service(
        engine: Arc<QueryEngine>,
        metrics: QueryMetrics,
        guard: Arc<Guard>,
        store: Arc<Store>,
    ) -> anyhow::Result<FlightServiceServer<FlightSqlDoor>> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Atoll");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        Ok(FlightServiceServer::new(FlightSqlDoor {
            engine,
            metrics,
            guard,
            store,
            sql_info: info.build()?,
            waiting: Arc::default(),
            places: Arc::new(tokio::sync::Semaphore::new(WAITING_MAX)),
        }))
    }

    /// The caller, from the request's key, allowed to query.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let headers = request.metadata().clone().into_headers();
        let caller = self
            .guard
            .caller(&headers, PATH)
            .map_err(|e| atoll_cluster::error::status(&e))?;
        caller
            .may(Need::Query)
            .map_err(|e| atoll_cluster::error::status(&e))?;
        Ok(caller)
    }

    /// The columns `sql` answers, planned as a query would be.
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<Schema, Status> {
        let described = self
            .engine
            .describe(sql, caller.tables.as_ref())
            .await
            .map_err(|e| atoll_cluster::error::status(&e))?;
        Ok(described.schema.as_ref().clone())
    }

    /// A FlightInfo whose one endpoint (this server) answers `ticket`.
    fn info(
        schema: &Schema,
        ticket: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| status(ErrorKind::Internal, e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// The FlightInfo of a catalog listing, for a caller who may query.
    fn listing(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        Self::info(schema, command, request.into_inner())
    }

    /// Starts `sql`, counted in the query metrics from now.
    async fn start(
        &self,
        caller: &Caller,
        sql: &str,
        params: Vec<ScalarValue>,
        allow_partial: Option<bool>,
    ) -> Result<(Execution, Counted), Status> {
        let counted = Counted::begin(&self.metrics);
        let started = self
            .engine
            .start_bound(sql, params, None, allow_partial, caller.tables.as_ref())
            .await;
        match started {
            Ok(execution) => Ok((execution, counted)),
            Err(e) => {
                counted.end(e.label());
                Err(atoll_cluster::error::status(&e))
            }
        }
    }

    /// A started query's batches as they come; dropping the stream (the
    /// client going away) stops the query on every node.
    fn stream(execution: Execution, counted: Counted) -> Response<DoGetStream> {
        let schema = execution.schema();
        let batches = stream::unfold(Some((execution, counted)), |state| async move {
            let (mut execution, counted) = state?;
            match execution.next().await {
                Ok(Some(batch)) => Some((Ok(batch), Some((execution, counted)))),
                Ok(None) => {
                    counted.end("ok");
                    None
                }
                Err(e) => {
                    counted.end(e.label());
                    let error = FlightError::Tonic(Box::new(atoll_cluster::error::status(&e)));
                    Some((Err(error), None))
                }
            }
        });
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Response::new(Box::pin(data))
    }

    /// GetFlightInfo of a query: the query starts now (planned once, its
    /// schema the running plan's) and waits for its DoGet, whose ticket
    /// names it; the ticket also carries the statement, run afresh if the
    /// started query is gone (waited too long, or a full waiting room: then
    /// the query is only planned here).
    async fn flight_info(
        &self,
        request: Request<FlightDescriptor>,
        handle: &[u8],
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let (sql, params) = read_handle(handle)?;
        let (schema, id) = match self.places.clone().try_acquire_owned() {
            Ok(place) => {
                let partial = allow_partial(&request)?;
                let (execution, counted) = self.start(&caller, &sql, params, partial).await?;
                let schema = execution.schema().as_ref().clone();
                let waiting = Waiting {
                    caller,
                    execution,
                    counted,
                    _place: place,
                };
                (schema, self.park(waiting))
            }
            Err(_) => (self.describe(&caller, &sql).await?, 0),
        };
        let mut ticket = id.to_le_bytes().to_vec();
        ticket.extend_from_slice(handle);
        let ticket = TicketStatementQuery {
            statement_handle: ticket.into(),
        };
        Self::info(&schema, ticket, request.into_inner())
    }

    /// Keeps a started query for its DoGet, at most `WAITING_FOR` (then
    /// dropped: the query stops, its place and admission slot are free);
    /// its number (never 0).
    fn park(&self, waiting: Waiting) -> u64 {
        let id = rand::random::<u64>().max(1);
        self.waiting.lock().insert(id, waiting);
        let room = Arc::downgrade(&self.waiting);
        tokio::spawn(async move {
            tokio::time::sleep(WAITING_FOR).await;
            let expired = room.upgrade().and_then(|room| room.lock().remove(&id));
            drop(expired);
        });
        id
    }

    /// The started query a ticket names, if it still waits and `caller`
    /// started it.
    fn unpark(&self, id: u64, caller: &Caller) -> Option<Waiting> {
        let mut waiting = self.waiting.lock();
        match waiting.get(&id) {
            Some(w) if &w.caller == caller => waiting.remove(&id),
            _ => None,
        }
    }

    /// DoGet of a ticket from [`FlightSqlDoor::flight_info`].
    async fn redeem(
        &self,
        request: Request<Ticket>,
        ticket: &[u8],
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let (id, handle) = ticket
            .split_at_checked(8)
            .ok_or_else(|| status(ErrorKind::BadInput, "bad ticket: too short".into()))?;
        let id = u64::from_le_bytes(id.try_into().expect("eight bytes"));
        if let Some(w) = self.unpark(id, &caller) {
            return Ok(Self::stream(w.execution, w.counted));
        }
        let (sql, params) = read_handle(handle)?;
        let partial = allow_partial(&request)?;
        let (execution, counted) = self.start(&caller, &sql, params, partial).await?;
        Ok(Self::stream(execution, counted))
    }

    /// A metadata answer: one batch.
    fn batch(batch: RecordBatch) -> Result<Response<DoGetStream>, Status> {
        let data = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(data)))
    }

    /// The tables the caller may read, with their columns.
    fn tables(&self, caller: &Caller) -> Vec<(String, Schema)> {
        let mut tables: Vec<(String, Schema)> = self
            .store
            .tables()
            .iter()
            .filter(|t| caller.tables.as_ref().is_none_or(|s| s.contains(t.name())))
            .map(|t| (t.name().to_string(), t.schema().arrow().as_ref().clone()))
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        tables
    }
}

fn status(kind: ErrorKind, message: String) -> Status {
    Status::new(atoll_cluster::error::code(kind), message)
}

/// The `atoll-allow-partial` header (`true` or `false`): whether a query
/// may answer from the partitions it can reach (as `/v1/query`'s
/// `allow_partial`); without it, the node's default.
fn allow_partial<T>(request: &Request<T>) -> Result<Option<bool>, Status> {
    let Some(value) = request.metadata().get("atoll-allow-partial") else {
        return Ok(None);
    };
    match value.to_str().map(str::to_ascii_lowercase).as_deref() {
        Ok("true") => Ok(Some(true)),
        Ok("false") => Ok(Some(false)),
        _ => Err(status(
            ErrorKind::BadInput,
            "the atoll-allow-partial header is true or false".into(),
        )),
    }
}

fn statement(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle).map_err(|_| {
        status(
            ErrorKind::BadInput,
            "the statement handle is not UTF-8".into(),
        )
    })
}

/// The largest handle read: SQL and parameter values.
const MAX_HANDLE: usize = 1 << 20;

/// A parameter value as a handle carries it (JSON: bounded, and read
/// without trusting any length the client wrote).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Param {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// Microseconds since the epoch, and the zone if the value had one.
    Time(i64, Option<String>),
}

impl Param {
    fn of(value: ScalarValue) -> Result<Param, String> {
        use ScalarValue as S;
        let int = |v: Option<i64>| v.map_or(Param::Null, Param::Int);
        Ok(match value {
            v if v.is_null() => Param::Null,
            S::Int8(v) => int(v.map(i64::from)),
            S::Int16(v) => int(v.map(i64::from)),
            S::Int32(v) => int(v.map(i64::from)),
            S::Int64(v) => int(v),
            S::UInt8(v) => int(v.map(i64::from)),
            S::UInt16(v) => int(v.map(i64::from)),
            S::UInt32(v) => int(v.map(i64::from)),
            S::UInt64(Some(v)) => {
                Param::Int(i64::try_from(v).map_err(|_| format!("{v} is too large"))?)
            }
            S::Float32(Some(v)) => Param::Float(f64::from(v)),
            S::Float64(Some(v)) => Param::Float(v),
            S::Utf8(Some(v)) | S::LargeUtf8(Some(v)) | S::Utf8View(Some(v)) => Param::Text(v),
            S::Boolean(Some(v)) => Param::Bool(v),
            S::TimestampSecond(Some(v), z) => {
                Param::Time(v.saturating_mul(1_000_000), z.map(|z| z.to_string()))
            }
            S::TimestampMillisecond(Some(v), z) => {
                Param::Time(v.saturating_mul(1_000), z.map(|z| z.to_string()))
            }
            S::TimestampMicrosecond(Some(v), z) => Param::Time(v, z.map(|z| z.to_string())),
            S::TimestampNanosecond(Some(v), z) => Param::Time(v / 1_000, z.map(|z| z.to_string())),
            other => {
                return Err(format!(
                    "parameters of type {} are not taken",
                    other.data_type()
                ));
            }
        })
    }

    fn value(self) -> ScalarValue {
        match self {
            Param::Null => ScalarValue::Null,
            Param::Int(v) => ScalarValue::Int64(Some(v)),
            Param::Float(v) => ScalarValue::Float64(Some(v)),
            Param::Text(v) => ScalarValue::Utf8(Some(v)),
            Param::Bool(v) => ScalarValue::Boolean(Some(v)),
            Param::Time(v, z) => ScalarValue::TimestampMicrosecond(Some(v), z.map(Into::into)),
        }
    }
}

/// A prepared statement's handle: its SQL and the parameter values bound
/// to it, so that the service keeps no state between calls.
fn prepared_handle(sql: &str, params: &[ScalarValue]) -> Result<Vec<u8>, Status> {
    let bad = |e: String| status(ErrorKind::BadInput, format!("parameter values: {e}"));
    let mut handle = (sql.len() as u32).to_le_bytes().to_vec();
    handle.extend_from_slice(sql.as_bytes());
    if !params.is_empty() {
        let params = params
            .iter()
            .cloned()
            .map(Param::of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let json = serde_json::to_vec(&params).map_err(|e| bad(e.to_string()))?;
        handle.extend_from_slice(&json);
    }
    if handle.len() > MAX_HANDLE {
        return Err(status(
            ErrorKind::TooLarge,
            format!("a statement with its parameters may take {MAX_HANDLE} bytes"),
        ));
    }
    Ok(handle)
}

/// The SQL and parameter values of a handle from [`prepared_handle`]
/// (which the client holds: read as untrusted bytes).
fn read_handle(handle: &[u8]) -> Result<(String, Vec<ScalarValue>), Status> {
    let bad = |why: &str| {
        status(
            ErrorKind::BadInput,
            format!("bad prepared statement handle: {why}"),
        )
    };
    if handle.len() > MAX_HANDLE {
        return Err(bad("too long"));
    }
    let (len, rest) = handle.split_at_checked(4).ok_or_else(|| bad("too short"))?;
    let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
    let (sql, params) = rest.split_at_checked(len).ok_or_else(|| bad("too short"))?;
    let sql = statement(sql)?.to_string();
    if params.is_empty() {
        return Ok((sql, Vec::new()));
    }
    let params: Vec<Param> = serde_json::from_slice(params).map_err(|e| bad(&e.to_string()))?;
    Ok((sql, params.into_iter().map(Param::value).collect()))
}

/// `?` placeholders (JDBC's and ADBC's) as DataFusion's `$1`, `$2`...,
/// outside quoted strings and identifiers.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let (mut quote, mut n) = (None, 0);
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '?') => {
                n += 1;
                out.push_str(&format!("${n}"));
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlDoor {
    type FlightService = FlightSqlDoor;

    /// Basic authentication whose password is an API key: answered with
    /// the key as the bearer token the client sends from then on.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let basic = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok());
        let key = match basic {
            Some(pair) => pair.split_once(':').map(|(_, key)| key.to_string()),
            None => None,
        };
        let bearer = format!("Bearer {}", key.unwrap_or_default());
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(value) = bearer.parse() {
            headers.insert(axum::http::header::AUTHORIZATION, value);
        }
        let caller = self
            .guard
            .caller(&headers, PATH)
            .map_err(|e| atoll_cluster::error::status(&e))?;
        caller
            .may(Need::Query)
            .map_err(|e| atoll_cluster::error::status(&e))?;
        let token = bearer.trim_start_matches("Bearer ").to_string();
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(stream::once(async move { Ok(reply) })));
        if let Ok(value) = MetadataValue::try_from(bearer.as_str()) {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = prepared_handle(&query.query, &[])?;
        self.flight_info(request, &handle).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.redeem(request, &ticket.statement_handle).await
    }

    /// A prepared statement is its SQL (Atoll plans at execution, with the
    /// ring as it is then); parameters are not taken.
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let sql = numbered_placeholders(&query.query);
        let described = self
            .engine
            .describe(&sql, caller.tables.as_ref())
            .await
            .map_err(|e| atoll_cluster::error::status(&e))?;
        let schema = described.schema.as_ref().clone();
        let parameters = Schema::new(
            described
                .params
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let t = t.clone().filter(|t| !t.is_null()).unwrap_or(DataType::Utf8);
                    Field::new(format!("${}", i + 1), t, true)
                })
                .collect::<Vec<_>>(),
        );
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| status(ErrorKind::Internal, e.to_string()))?;
        let IpcMessage(parameter_schema) = SchemaAsIpc::new(&parameters, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| status(ErrorKind::Internal, e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared_handle(&sql, &[])?.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        self.caller(&request).map(|_| ())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.flight_info(request, &query.prepared_statement_handle)
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let (sql, params) = read_handle(&query.prepared_statement_handle)?;
        let (execution, counted) = self
            .start(&caller, &sql, params, allow_partial(&request)?)
            .await?;
        Ok(Self::stream(execution, counted))
    }

    /// Binds parameter values (one row) to a prepared statement: answered
    /// with a new handle that carries them.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<arrow_flight::sql::DoPutPreparedStatementResult, Status> {
        self.caller(&request)?;
        let (sql, _) = read_handle(&query.prepared_statement_handle)?;
        // One row of values is taken: reading stops at the first batch
        // with rows (and refuses a second row), so a long stream is never
        // held.
        let data = request.into_inner().map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let bad = |e: String| status(ErrorKind::BadInput, format!("parameter values: {e}"));
        let mut values = Vec::new();
        while let Some(batch) = batches.try_next().await.map_err(|e| bad(e.to_string()))? {
            match batch.num_rows() {
                0 => continue,
                1 if values.is_empty() => {
                    values = batch
                        .columns()
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c, 0))
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(e.to_string()))?;
                    break;
                }
                n => return Err(bad(format!("a query takes one row of values, not {n}"))),
            }
        }
        if !values.is_empty()
            && let Some(more) = batches.try_next().await.map_err(|e| bad(e.to_string()))?
            && more.num_rows() > 0
        {
            return Err(bad("a query takes one row of values, not more".into()));
        }
        Ok(arrow_flight::sql::DoPutPreparedStatementResult {
            prepared_statement_handle: Some(prepared_handle(&sql, &values)?.into()),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.listing(request, &schema, query)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut builder = query.into_builder();
        builder.append(pg_catalog::DATABASE);
        Self::batch(builder.build().map_err(Status::from)?)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing(request, &schema, query)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut builder = query.into_builder();
        builder.append(pg_catalog::DATABASE, SCHEMA);
        Self::batch(builder.build().map_err(Status::from)?)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing(request, &schema, query)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let mut builder = query.into_builder();
        for (name, schema) in self.tables(&caller) {
            builder
                .append(pg_catalog::DATABASE, SCHEMA, name, "TABLE", &schema)
                .map_err(Status::from)?;
        }
        Self::batch(builder.build().map_err(Status::from)?)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.listing(request, &schema, query)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Self::batch(builder.build().map_err(Status::from)?)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.listing(request, &schema, query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(Status::from)?;
        Self::batch(batch)
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        Err(status(
            ErrorKind::BadInput,
            format!("Atoll's Flight SQL does not answer {}", message.type_url),
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_placeholders("SELECT '?' , \"a?\" FROM t WHERE a = ? AND b > ?"),
            "SELECT '?' , \"a?\" FROM t WHERE a = $1 AND b > $2"
        );
    }

    #[test]
    fn handles_carry_sql_and_values_and_refuse_garbage() {
        let values = vec![
            ScalarValue::Int32(Some(7)),
            ScalarValue::Utf8(Some("a'b".into())),
            ScalarValue::TimestampMillisecond(Some(5), Some("UTC".into())),
            ScalarValue::Null,
        ];
        let handle = prepared_handle("SELECT $1, $2, $3, $4", &values).unwrap();
        let (sql, params) = read_handle(&handle).unwrap();
        assert_eq!(sql, "SELECT $1, $2, $3, $4");
        assert_eq!(
            params,
            vec![
                ScalarValue::Int64(Some(7)),
                ScalarValue::Utf8(Some("a'b".into())),
                ScalarValue::TimestampMicrosecond(Some(5000), Some("UTC".into())),
                ScalarValue::Null,
            ]
        );
        let mut broken = handle.clone();
        broken.truncate(handle.len() - 9);
        assert!(read_handle(&broken).is_err());
        assert!(read_handle(&[1, 0]).is_err());
        assert!(read_handle(&[200, 0, 0, 0, b'x']).is_err());
        // Whatever lengths a forged handle claims, reading it is bounded.
        let mut forged = 0u32.to_le_bytes().to_vec();
        forged.extend_from_slice(b"\xff\xff\xff\x7f{\"Int\":1}");
        assert!(read_handle(&forged).is_err());
        assert!(read_handle(&vec![0u8; MAX_HANDLE + 1]).is_err());
        assert!(prepared_handle("x", &[ScalarValue::Date32(Some(1))]).is_err());
    }
}
