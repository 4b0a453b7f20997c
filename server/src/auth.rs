//! Authentication: trust on loopback, SCRAM-SHA-256 when credentials are configured.
//!
//! Listening on a non-loopback address without credentials is refused at start-up (see `main`):
//! a streaming server holding business data must not be open to the network by default.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::ClientInfo;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, LoginInfo, Password, StartupHandler};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::wire::{Frontend, TrustStartup};

/// Iterations of the SCRAM key derivation (Postgres' default).
const SCRAM_ITERATIONS: usize = 4096;

/// The one configured user and its salted password.
pub struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials for `user` with `password`, salted once at start-up.
    pub fn new(user: &str, password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        let salted_password = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Self {
            user: user.to_string(),
            salt: salt.to_vec(),
            salted_password,
        }
    }
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() != Some(self.user.as_str()) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                crate::error::sqlstate::INVALID_PASSWORD.into(),
                format!(
                    "password authentication failed for user \"{}\"",
                    login.user().unwrap_or_default()
                ),
            ))));
        }
        Ok(Password::new(
            Some(self.salt.clone()),
            self.salted_password.clone(),
        ))
    }
}

/// The startup handler of one connection.
pub enum Startup {
    Trust(TrustStartup),
    Scram(Box<SASLAuthStartupHandler<crate::wire::ServerParameters>>),
}

/// A fresh startup handler (SCRAM keeps per-connection exchange state).
pub fn startup_handler(frontend: &Arc<Frontend>) -> Arc<Startup> {
    match &frontend.scram {
        None => Arc::new(Startup::Trust(TrustStartup::new(Arc::clone(frontend)))),
        Some(credentials) => {
            let mut scram = ScramAuth::new(Arc::clone(credentials) as Arc<dyn AuthSource>);
            scram.set_iterations(SCRAM_ITERATIONS);
            let handler = SASLAuthStartupHandler::new(Arc::new(Frontend::parameters()))
                .with_scram(scram)
                .with_connection_manager(Arc::clone(&frontend.connections));
            Arc::new(Startup::Scram(Box::new(handler)))
        }
    }
}

#[async_trait]
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
        let result = match self {
            Startup::Trust(h) => h.on_startup(client, message).await,
            Startup::Scram(h) => match h.on_startup(client, message).await {
                // pgwire names the user of the SCRAM exchange, which libpq leaves empty; Postgres
                // names the user the client logged in as.
                Err(PgWireError::InvalidPassword(_)) => {
                    let user = client
                        .metadata()
                        .get(pgwire::api::METADATA_USER)
                        .cloned()
                        .unwrap_or_default();
                    Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".into(),
                        crate::error::sqlstate::INVALID_PASSWORD.into(),
                        format!("password authentication failed for user \"{user}\""),
                    ))))
                }
                other => other,
            },
        };
        crate::wire::keep_cancel_handle(client);
        result
    }
}
