//! The Postgres wire protocol (`--pg-addr`): `psql`, psycopg, Grafana and
//! other Postgres clients ask SQL through Atoll's own engine, the same
//! path as `/v1/query` (`QueryEngine::start_bound`: the sandbox, limits,
//! admission, the coverage plan across the ring, the key's table scope).
//!
//! Both query protocols: simple, and extended (Parse/Bind/Describe/
//! Execute, `$n` parameters, text or binary results per column). Client
//! idioms DataFusion does not plan are rewritten first (`dialect`); the
//! catalog clients browse is the engine's (`atoll_query::pg_catalog`).
//! Who the client is: `auth`; its settings, session statements and
//! cancellation: `session`; rows: `encode`; parameters: `params`.

mod auth;
mod dialect;
mod encode;
mod params;
mod session;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use atoll_auth::{Auth, Caller, Need};
use atoll_errors::{Classified, ErrorKind};
use atoll_query::engine::Execution;
use atoll_query::metrics::{Counted, QueryMetrics};
use atoll_query::{QueryEngine, ScalarValue};
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::auth::driver::AuthDriver;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::response::NoticeResponse;
use tokio::net::TcpListener;

use auth::{Keys, Startup};
use pgwire::messages::data::DataRow;
use session::{Answer, Cancel, Session, SessionStatement, Sessions, session_statement};

/// The door, shared by every connection.
pub struct PgDoor {
    engine: Arc<QueryEngine>,
    metrics: QueryMetrics,
    auth: Arc<Auth>,
    keys: Arc<Keys>,
    driver: AuthDriver<DefaultServerParameterProvider, Caller>,
    sessions: Sessions,
    tls: Option<pgwire::tokio::TlsAcceptor>,
}

impl PgDoor {
    pub fn new(
        engine: Arc<QueryEngine>,
        metrics: QueryMetrics,
        auth: Arc<Auth>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Arc<PgDoor> {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.0 (Atoll {})", env!("CARGO_PKG_VERSION"));
        Arc::new(PgDoor {
            engine,
            metrics,
            keys: Arc::new(Keys(auth.clone())),
            auth,
            driver: AuthDriver::new(parameters),
            sessions: Sessions::default(),
            tls: tls.map(pgwire::tokio::TlsAcceptor::from),
        })
    }

    /// Serves connections on `listener` until the node stops. With a
    /// certificate, clients may ask for TLS (`sslmode=require`).
    pub fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    accepted = listener.accept() => accepted,
                };
                match accepted {
                    Ok((socket, _)) => {
                        let connection = Arc::new(PgConnection {
                            door: self.clone(),
                            session: Arc::default(),
                        });
                        let tls = self.tls.clone();
                        tokio::spawn(async move {
                            if let Err(e) =
                                pgwire::tokio::process_socket(socket, tls, connection).await
                            {
                                tracing::debug!(error = %e, "a Postgres connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a Postgres connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
}

/// One client connection.
struct PgConnection {
    door: Arc<PgDoor>,
    session: Arc<Session>,
}

impl PgConnection {
    fn queries(&self) -> Arc<Queries> {
        Arc::new(Queries {
            door: self.door.clone(),
            session: self.session.clone(),
        })
    }
}

impl PgWireServerHandlers for PgConnection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::new(Startup {
            door: self.door.clone(),
            session: self.session.clone(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Canceller(self.door.clone()))
    }
}

/// Cancel requests arrive on a connection of their own, naming the
/// session by the process id and secret it was given.
struct Canceller(Arc<PgDoor>);

#[async_trait::async_trait]
impl CancelHandler for Canceller {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.0.sessions.cancel(request.pid, &request.secret_key);
    }
}

/// What a client sent: a statement about the session, or a query (in
/// the SQL DataFusion plans).
enum Sent {
    Session(SessionStatement),
    Query(String),
}

fn sent(sql: &str) -> PgWireResult<Sent> {
    if let Some(statement) = session_statement(sql) {
        return Ok(Sent::Session(statement));
    }
    if sql
        .trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"))
    {
        return Err(sqlstate(
            "0A000",
            "COPY is not served: Atoll SQL is read-only, and answers come from SELECT".into(),
        ));
    }
    Ok(Sent::Query(dialect::rewrite(sql)))
}

/// A parsed statement: one about the session, or a query planned once
/// at Parse (its columns and parameter types known for Describe).
#[derive(Clone)]
pub enum Statement {
    Session(SessionStatement),
    Query(Arc<Prepared>),
}

pub struct Prepared {
    sql: String,
    schema: SchemaRef,
    params: Vec<Option<DataType>>,
}

/// One session's statements, by either protocol.
struct Queries {
    door: Arc<PgDoor>,
    session: Arc<Session>,
}

impl Queries {
    /// The session's caller as its key stands now (a key revoked, or
    /// changed, since the client logged in counts from its next
    /// statement), allowed to query.
    fn caller(&self) -> PgWireResult<Caller> {
        let logged_in = self
            .session
            .caller()
            .ok_or_else(|| pg_error(ErrorKind::Unauthenticated, "not authenticated".into()))?;
        let now_ms = atoll_store::now_micros() / 1000;
        let caller = self
            .door
            .auth
            .current(&logged_in, now_ms)
            .map_err(|e| pg_error(e.kind(), e.to_string()))?;
        caller
            .may(Need::Query)
            .map_err(|e| pg_error(e.kind(), e.to_string()))?;
        Ok(caller)
    }

    /// Plans a statement for Parse; a query's plan gives Describe its
    /// columns and parameter types.
    async fn prepare(&self, sql: &str) -> PgWireResult<Statement> {
        let sql = match sent(sql)? {
            Sent::Session(statement) => return Ok(Statement::Session(statement)),
            Sent::Query(sql) => sql,
        };
        let caller = self.caller()?;
        let described = self
            .door
            .engine
            .describe(&sql, caller.tables.as_ref())
            .await
            .map_err(|e| pg_error(e.kind(), e.to_string()))?;
        Ok(Statement::Query(Arc::new(Prepared {
            sql,
            schema: described.schema,
            params: described.params,
        })))
    }

    /// Runs a query: its rows are encoded a batch at a time as the client
    /// reads them, never held whole; a cancel request, or the client
    /// going away, stops it on every node.
    async fn run<C>(
        &self,
        client: &mut C,
        sql: &str,
        params: Vec<ScalarValue>,
        format: &Format,
        described: Option<&SchemaRef>,
    ) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let caller = self.caller()?;
        let counted = Counted::begin(&self.door.metrics);
        let mut cancel = self.session.begin_query();
        let started = self.door.engine.start_bound(
            sql,
            params,
            self.session.timeout(),
            self.session.allow_partial(),
            caller.tables.as_ref(),
        );
        let execution = tokio::select! {
            started = started => match started {
                Ok(execution) => execution,
                Err(e) => {
                    counted.end(e.label());
                    return Err(pg_error(e.kind(), e.to_string()));
                }
            },
            _ = cancel.cancelled() => return Err(cancelled()),
        };
        // Columns described at Parse and run now must agree: a table's
        // column may have widened (Int64 to Float64) or grown since, and a
        // driver would read the new bytes with the old type.
        if let Some(described) = described
            && !same_columns(described, &execution.schema())
        {
            counted.end("refused");
            return Err(sqlstate(
                "0A000",
                "cached plan must not change result type: the table's columns changed since the statement was prepared; prepare it again".into(),
            ));
        }
        let stats = execution.stats(false);
        if stats.coverage < 1.0 {
            let notice = ErrorInfo::new(
                "NOTICE".into(),
                "01000".into(),
                format!(
                    "partial answer: coverage {:.3}, partitions {:?} could not be read",
                    stats.coverage, stats.missing_partitions
                ),
            );
            client
                .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                    notice,
                )))
                .await?;
        }
        let fields = Arc::new(encode::fields(&execution.schema(), |i| {
            format.format_for(i)
        }));
        let running = Running {
            execution,
            encoder: DataRowEncoder::new(fields.clone()),
            cancel,
            counted: Some(counted),
        };
        let batches = stream::unfold(running, |mut running| async move {
            let rows = running.next_rows().await?;
            Some((rows, running))
        });
        let rows = batches.flat_map(|rows| match rows {
            Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async move { Err(e) }).right_stream(),
        });
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    fn answer(&self, statement: &SessionStatement, format: &Format) -> PgWireResult<Response> {
        let answer = self
            .session
            .answer(statement)
            .map_err(|(code, message)| sqlstate(code, message))?;
        Ok(match answer {
            Answer::Tag(tag @ "BEGIN") => Response::TransactionStart(Tag::new(tag)),
            Answer::Tag(tag @ ("COMMIT" | "ROLLBACK")) => Response::TransactionEnd(Tag::new(tag)),
            Answer::Tag(tag) => Response::Execution(Tag::new(tag)),
            Answer::Rows(names, rows) => {
                let fields: Vec<FieldInfo> = names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| FieldInfo::new(n, None, None, Type::TEXT, format.format_for(i)))
                    .collect();
                let fields = Arc::new(fields);
                let mut encoder = DataRowEncoder::new(fields.clone());
                let mut encoded = Vec::with_capacity(rows.len());
                for row in rows {
                    for value in row {
                        encoder.encode_field(&value)?;
                    }
                    encoded.push(Ok(encoder.take_row()));
                }
                Response::Query(QueryResponse::new(fields, stream::iter(encoded)))
            }
        })
    }
}

#[async_trait::async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Planned once, when it runs: nothing is described ahead.
        let text = Format::UnifiedText;
        let response = match sent(query)? {
            Sent::Session(statement) => self.answer(&statement, &text)?,
            Sent::Query(sql) => self.run(client, &sql, Vec::new(), &text, None).await?,
        };
        Ok(vec![response])
    }
}

#[async_trait::async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser(Queries {
            door: self.door.clone(),
            session: self.session.clone(),
        }))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let format = &portal.result_column_format;
        match &portal.statement.statement {
            Statement::Session(statement) => self.answer(statement, format),
            Statement::Query(prepared) => {
                let params =
                    params::decode(portal, &portal.statement.parameter_types, &prepared.params)?;
                self.run(
                    client,
                    &prepared.sql,
                    params,
                    format,
                    Some(&prepared.schema),
                )
                .await
            }
        }
    }
}

/// A query whose rows the client is reading.
struct Running {
    execution: Execution,
    encoder: DataRowEncoder,
    cancel: Cancel,
    /// Until the query ends (then taken, with its outcome).
    counted: Option<Counted>,
}

impl Running {
    /// The next batch's rows; None once the query ended, after its last
    /// batch or its error.
    async fn next_rows(&mut self) -> Option<PgWireResult<Vec<DataRow>>> {
        let counted = self.counted.take()?;
        let next = tokio::select! {
            next = self.execution.next() => next,
            _ = self.cancel.cancelled() => return Some(Err(cancelled())),
        };
        match next {
            Ok(None) => {
                counted.end("ok");
                None
            }
            Ok(Some(batch)) => {
                let mut rows = Vec::with_capacity(batch.num_rows());
                let encoded = encode::encode(&batch, &mut self.encoder, &mut rows);
                if encoded.is_ok() {
                    self.counted = Some(counted);
                } else {
                    counted.end("error");
                }
                Some(encoded.map(|()| rows))
            }
            Err(e) => {
                counted.end(e.label());
                Some(Err(pg_error(e.kind(), e.to_string())))
            }
        }
    }
}

/// Plans a statement at Parse, so that Describe can say its columns and
/// parameter types and a refused statement fails at once.
pub struct Parser(Queries);

#[async_trait::async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.0.prepare(sql).await.map(Some)
    }

    fn get_parameter_types(&self, statement: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(match statement {
            Statement::Session(_) => Vec::new(),
            Statement::Query(prepared) => prepared
                .params
                .iter()
                .map(|t| t.as_ref().map_or(Type::TEXT, encode::pg_type))
                .collect(),
        })
    }

    fn get_result_schema(
        &self,
        statement: &Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = |i| format.map_or(FieldFormat::Text, |f| f.format_for(i));
        Ok(match statement {
            Statement::Session(SessionStatement::Show(name)) => vec![FieldInfo::new(
                name.to_ascii_lowercase(),
                None,
                None,
                Type::TEXT,
                format(0),
            )],
            Statement::Session(SessionStatement::ShowAll) => ["name", "setting"]
                .iter()
                .enumerate()
                .map(|(i, n)| FieldInfo::new(n.to_string(), None, None, Type::TEXT, format(i)))
                .collect(),
            Statement::Session(_) => Vec::new(),
            Statement::Query(prepared) => encode::fields(&prepared.schema, format),
        })
    }
}

fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| {
            x.name() == y.name() && encode::pg_type(x.data_type()) == encode::pg_type(y.data_type())
        })
}

fn cancelled() -> PgWireError {
    sqlstate("57014", "canceling statement due to user request".into())
}

/// An error as Postgres clients read it: its SQLSTATE from its kind.
fn pg_error(kind: ErrorKind, message: String) -> PgWireError {
    sqlstate(
        match kind {
            ErrorKind::BadInput | ErrorKind::UnsupportedMedia => "42601",
            ErrorKind::NotFound => "42P01",
            ErrorKind::Conflict | ErrorKind::Mismatch => "55000",
            ErrorKind::Unauthenticated => "28000",
            ErrorKind::Forbidden => "42501",
            ErrorKind::TooLarge | ErrorKind::LimitHit => "54000",
            ErrorKind::Timeout => "57014",
            ErrorKind::Unavailable => "57P03",
            ErrorKind::Internal => "XX000",
        },
        message,
    )
}

fn sqlstate(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}
