//! Who a Postgres client is. With keys on, the password is an API key
//! with the `query` role: when the user name is a key's name (or id),
//! SCRAM-SHA-256 proves the key against its stored verifier, so the key
//! never crosses the network; any other user name may send a key in clear
//! from loopback or over TLS only (the bootstrap admin key, which has no
//! verifier). With keys off any user and password are taken.

use std::fmt::Debug;
use std::sync::Arc;

use atoll_auth::{Auth, Caller};
use futures::Sink;
use pgwire::api::ClientInfo;
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    AuthSource, LoginInfo, Password, StartupHandler, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::PgDoor;
use super::session::Session;

/// API keys as pgwire asks for them.
pub struct Keys(pub Arc<Auth>);

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

/// Authenticates a connection and registers its session for cancel
/// requests.
pub struct Startup {
    pub door: Arc<PgDoor>,
    pub session: Arc<Session>,
}

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
        let door = &self.door;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !door.auth.required() {
                    self.session.set_caller(Caller::open());
                    door.driver.complete_authentication(client, None).await?;
                    self.registered(client);
                    return Ok(());
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
    /// Makes the session reachable by cancel requests, by the process id
    /// and secret the client was just given.
    fn registered<C: ClientInfo>(&self, client: &C) {
        let (pid, secret) = client.pid_and_secret_key();
        self.door.sessions.register(pid, &secret, &self.session);
    }

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
                // A use of the key, as an HTTP call with it is.
                let now_ms = atoll_store::now_micros() / 1000;
                let caller = self.door.auth.current(&caller, now_ms).unwrap_or(caller);
                self.session.set_caller(caller);
                self.door
                    .driver
                    .complete_authentication(client, final_message)
                    .await?;
                self.registered(client);
                Ok(())
            }
            AuthOutcome::Authenticated { identity: None, .. } => Err(PgWireError::InvalidPassword(
                client.metadata().get("user").cloned().unwrap_or_default(),
            )),
            AuthOutcome::InProgress => Ok(()),
        }
    }
}
