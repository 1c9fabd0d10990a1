//! The Postgres wire protocol (`--pg-addr`): `psql` and other Postgres
//! clients ask SQL through Atoll's own engine, the same path as
//! `/v1/query` (`QueryEngine::start`: the sandbox, limits, admission, the
//! coverage plan across the ring, the key's table scope).
//!
//! Authentication, with keys on: the password is an API key with the
//! `query` role. When the user name is a key's name (or id), SCRAM-SHA-256
//! proves the key against its stored verifier, so the key never crosses
//! the network; any other user name may send a key in clear from loopback
//! only (the bootstrap admin key, which has no verifier). With keys off any
//! user and password are taken.
//!
//! This is the simple query protocol only, with text results; the
//! extended protocol (parameters, binary results) and the catalog clients
//! browse with are not served yet (docs/postgres.md).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use atoll_auth::{Auth, Caller, Need};
use atoll_errors::{Classified, ErrorKind};
use atoll_query::QueryEngine;
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    AuthDriver, AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;

/// The door, shared by every connection.
pub struct PgDoor {
    engine: Arc<QueryEngine>,
    auth: Arc<Auth>,
    keys: Arc<Keys>,
    driver: AuthDriver<DefaultServerParameterProvider, Caller>,
}

impl PgDoor {
    pub fn new(engine: Arc<QueryEngine>, auth: Arc<Auth>) -> Arc<PgDoor> {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.0 (Atoll {})", env!("CARGO_PKG_VERSION"));
        Arc::new(PgDoor {
            engine,
            keys: Arc::new(Keys(auth.clone())),
            auth,
            driver: AuthDriver::new(parameters),
        })
    }

    /// Serves connections on `listener` until the node stops.
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
                        let connection = Arc::new(PgConnection { door: self.clone() });
                        tokio::spawn(async move {
                            if let Err(e) =
                                pgwire::tokio::process_socket(socket, None, connection).await
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

/// API keys as pgwire asks for them.
struct Keys(Arc<Auth>);

impl Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys")
    }
}

#[async_trait::async_trait]
impl AuthSource<Caller> for Keys {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn verify_password(
        &self,
        login: &LoginInfo,
        presented: &[u8],
    ) -> PgWireResult<Option<Caller>> {
        let key = std::str::from_utf8(presented).unwrap_or_default();
        let now_ms = atoll_store::now_micros() / 1000;
        self.0
            .authenticate(Some(key), now_ms)
            .map(Some)
            .map_err(|_| PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()))
    }

    async fn get_scram_secret(
        &self,
        login: &LoginInfo,
    ) -> PgWireResult<(ScramSecret, Option<Caller>)> {
        let user = login.user().unwrap_or_default();
        match self.0.registry().read().scram(user) {
            Some((v, caller)) => Ok((
                ScramSecret::Verifier {
                    salt: v.salt,
                    iterations: v.iterations,
                    stored_key: v.stored_key,
                    server_key: v.server_key,
                },
                Some(caller),
            )),
            // A verifier no proof matches: an unknown user fails as a wrong
            // key does, at the same step.
            None => Ok((
                ScramSecret::Verifier {
                    salt: rand::random::<[u8; 16]>().to_vec(),
                    iterations: 4096,
                    stored_key: rand::random::<[u8; 32]>().to_vec(),
                    server_key: rand::random::<[u8; 32]>().to_vec(),
                },
                None,
            )),
        }
    }
}

/// One client connection.
struct PgConnection {
    door: Arc<PgDoor>,
}

impl PgWireServerHandlers for PgConnection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Queries(self.door.clone()))
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup(self.door.clone()))
    }
}

struct Startup(Arc<PgDoor>);

#[async_trait::async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let door = &self.0;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !door.auth.required() {
                    client.session_extensions().insert(Caller::open());
                    return door.driver.complete_authentication(client, None).await;
                }
                // SCRAM for a user naming a key (the key never travels);
                // the key itself as the password only where it cannot be
                // overheard (the bootstrap admin key has no verifier).
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let names_a_key = door.auth.registry().read().scram(&user).is_some();
                let private = client.socket_addr().ip().is_loopback() || client.is_secure();
                let mechanism = if private && !names_a_key {
                    CleartextPasswordAuth::new(door.keys.clone()).create()
                } else {
                    let source: Arc<dyn AuthSource<Caller>> = door.keys.clone();
                    ScramAuth::new(source).create()
                };
                let outcome = door.driver.begin_authentication(client, mechanism).await?;
                self.settle(client, outcome).await
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let outcome = door.driver.advance_authentication(client, message).await?;
                self.settle(client, outcome).await
            }
            _ => Ok(()),
        }
    }
}

impl Startup {
    /// Ends the startup once the key is proven, the session holding its
    /// caller.
    async fn settle<C>(&self, client: &mut C, outcome: AuthOutcome<Caller>) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match outcome {
            AuthOutcome::Authenticated {
                identity: Some(caller),
                final_message,
            } => {
                client.session_extensions().insert(caller);
                self.0
                    .driver
                    .complete_authentication(client, final_message)
                    .await
            }
            AuthOutcome::Authenticated { identity: None, .. } => Err(PgWireError::InvalidPassword(
                client.metadata().get("user").cloned().unwrap_or_default(),
            )),
            AuthOutcome::InProgress => Ok(()),
        }
    }
}

struct Queries(Arc<PgDoor>);

#[async_trait::async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let caller = client
            .session_extensions()
            .get::<Caller>()
            .ok_or_else(|| pg_error(ErrorKind::Unauthenticated, "not authenticated".into()))?;
        if let Some(response) = session_statement(query) {
            return Ok(vec![response]);
        }
        caller
            .may(Need::Query)
            .map_err(|e| pg_error(e.kind(), e.to_string()))?;
        let execution = self
            .0
            .engine
            .start(query, None, None, caller.tables.as_ref())
            .await
            .map_err(|e| pg_error(e.kind(), e.to_string()))?;
        let schema = execution.schema();
        let fields: Vec<FieldInfo> = schema
            .fields()
            .iter()
            .map(|f| {
                FieldInfo::new(
                    f.name().clone(),
                    None,
                    None,
                    pg_type(f.data_type()),
                    FieldFormat::Text,
                )
            })
            .collect();
        let fields = Arc::new(fields);
        // Rows are encoded a batch at a time as the client reads them: an
        // answer is never held whole (dropping the stream cancels the
        // query).
        let encoder = DataRowEncoder::new(fields.clone());
        let batches = stream::unfold(Some((execution, encoder)), |state| async move {
            let (mut execution, mut encoder) = state?;
            let rows = match execution.next().await {
                Ok(None) => return None,
                Ok(Some(batch)) => {
                    let mut rows = Vec::with_capacity(batch.num_rows());
                    encode(&batch, &mut encoder, &mut rows).map(|()| rows)
                }
                Err(e) => Err(pg_error(e.kind(), e.to_string())),
            };
            // After an error, the stream ends.
            let next = rows.is_ok().then_some((execution, encoder));
            Some((rows, next))
        });
        let rows = batches.flat_map(|rows| match rows {
            Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async move { Err(e) }).right_stream(),
        });
        Ok(vec![Response::Query(QueryResponse::new(fields, rows))])
    }
}

/// Statements a Postgres client sends for its session, answered here:
/// transactions (Atoll only reads), `SET` of settings, `SHOW` of a few.
fn session_statement(query: &str) -> Option<Response> {
    let q = query
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_ascii_lowercase();
    let word = q.split_whitespace().next().unwrap_or("");
    match word {
        "begin" | "start" => Some(Response::TransactionStart(Tag::new("BEGIN"))),
        "commit" | "end" => Some(Response::TransactionEnd(Tag::new("COMMIT"))),
        "rollback" | "abort" => Some(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        "set" | "reset" | "discard" => Some(Response::Execution(Tag::new("SET"))),
        _ => None,
    }
}

/// The Postgres type a column is shown as.
fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Int64 => Type::INT8,
        DataType::Int32 | DataType::Int16 | DataType::Int8 => Type::INT8,
        DataType::Float64 | DataType::Float32 => Type::FLOAT8,
        DataType::Boolean => Type::BOOL,
        DataType::Timestamp(TimeUnit::Microsecond, _) => Type::TIMESTAMPTZ,
        _ => Type::TEXT,
    }
}

fn encode(
    batch: &RecordBatch,
    encoder: &mut DataRowEncoder,
    rows: &mut Vec<pgwire::messages::data::DataRow>,
) -> PgWireResult<()> {
    let columns = batch.columns();
    let formatters: Vec<_> = columns
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default()))
        .collect::<Result<_, _>>()
        .map_err(|e| pg_error(ErrorKind::Internal, e.to_string()))?;
    for row in 0..batch.num_rows() {
        for (c, column) in columns.iter().enumerate() {
            if column.is_null(row) {
                encoder.encode_field(&None::<String>)?;
                continue;
            }
            match column.data_type() {
                DataType::Int64 => {
                    encoder.encode_field(&column.as_primitive::<Int64Type>().value(row))?
                }
                DataType::Float64 => {
                    encoder.encode_field(&column.as_primitive::<Float64Type>().value(row))?
                }
                DataType::Boolean => encoder.encode_field(&column.as_boolean().value(row))?,
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    // Postgres's text form of a timestamptz, in UTC.
                    let micros = column
                        .as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .map_or(0, |a| a.value(row));
                    let text = chrono::DateTime::from_timestamp_micros(micros)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string());
                    encoder.encode_field(&text)?
                }
                DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Float32 => {
                    // Shown as INT8 / FLOAT8: their text is the same.
                    encoder.encode_field(&formatters[c].value(row).to_string())?
                }
                _ => encoder.encode_field(&formatters[c].value(row).to_string())?,
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(())
}

/// An error as Postgres clients read it: its SQLSTATE from its kind.
fn pg_error(kind: ErrorKind, message: String) -> PgWireError {
    let code = match kind {
        ErrorKind::BadInput | ErrorKind::UnsupportedMedia => "42601",
        ErrorKind::NotFound => "42P01",
        ErrorKind::Conflict | ErrorKind::Mismatch => "55000",
        ErrorKind::Unauthenticated => "28000",
        ErrorKind::Forbidden => "42501",
        ErrorKind::TooLarge | ErrorKind::LimitHit => "54000",
        ErrorKind::Timeout => "57014",
        ErrorKind::Unavailable => "57P03",
        ErrorKind::Internal => "XX000",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}
