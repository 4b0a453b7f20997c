//! The Postgres wire front end: pgwire handlers for one client connection.
//!
//! pgwire owns the protocol state machine (startup, Parse/Bind/Execute/Sync, portals with
//! row-limited Execute and PortalSuspended, COPY sub-protocol, cancel keys); this module answers
//! its callbacks with a [`Session`]. One [`Connection`] is built per socket, so session state needs no
//! sharing beyond the connection's own tasks. Results are encoded by `arrow-pg` in the text or
//! binary format each column was asked for.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use futures::{Sink, SinkExt, stream};
use pgwire::api::auth::{
    DefaultServerParameterProvider, ServerParameterProvider, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, DEFAULT_NAME,
    METADATA_DATABASE, METADATA_USER, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::{Bind, BindComplete, Execute, Sync as PgSync};
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use rivulet_planner::parse::{Parsed, Statement, parse_sql};
use tokio::sync::{Mutex, MutexGuard};

use crate::catalog::DEFAULT_DATABASE;
use crate::error::{SqlError, sqlstate};
use crate::exec::{Outcome, plan_query};
use crate::idle::IdleTimer;
use crate::interrupt::{ClientWatch, Interrupt, Reason};
use crate::session::{Notices, SERVER_VERSION, Session, Shared};

/// Server-wide pieces every connection uses.
pub struct Frontend {
    pub shared: Arc<Shared>,
    pub connections: Arc<ConnectionManager>,
    pub pids: RandomPidSecretKeyGenerator,
    pub parameters: Arc<ServerParameters>,
    /// SCRAM-SHA-256 credentials; `None` means trust (loopback only).
    pub scram: Option<Arc<crate::auth::Credentials>>,
}

impl Frontend {
    /// The ParameterStatus values drivers read at startup.
    pub fn parameters() -> ServerParameters {
        let mut p = DefaultServerParameterProvider::default();
        p.server_version = SERVER_VERSION.to_string();
        p.time_zone = "UTC".into();
        p.date_style = "ISO, MDY".into();
        p.client_encoding = Some("UTF8".into());
        ServerParameters(p)
    }
}

/// The ParameterStatus values sent at startup: the server's, with the `TimeZone` the client
/// asked for in its startup packet (pgjdbc's JVM zone), as the session takes it.
pub struct ServerParameters(DefaultServerParameterProvider);

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, client: &C) -> Option<std::collections::HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut params = self.0.server_parameters(client)?;
        if let Some(zone) = startup_zone(client) {
            params.insert("TimeZone".into(), zone);
        }
        Some(params)
    }
}

/// The settings Postgres reports to the client (ParameterStatus) whenever they change, by the
/// session's key and as Postgres names them.
const REPORTED: [(&str, &str); 5] = [
    ("application_name", "application_name"),
    ("datestyle", "DateStyle"),
    ("intervalstyle", "IntervalStyle"),
    ("search_path", "search_path"),
    ("timezone", "TimeZone"),
];

/// The session's values of the [`REPORTED`] settings.
fn reported(session: &Session) -> Vec<Option<String>> {
    REPORTED
        .iter()
        .map(|(key, _)| session.settings.get(*key).cloned())
        .collect()
}

/// Sends a ParameterStatus for each [`REPORTED`] setting that changed since `before` (a SET, a
/// RESET, a ROLLBACK that undid one), as Postgres does: psycopg reads `TimeZone` from it.
async fn report_changes<C>(
    client: &mut C,
    before: &[Option<String>],
    session: &Session,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for ((key, name), was) in REPORTED.iter().zip(before) {
        let now = session.settings.get(*key);
        if now != was.as_ref() {
            let status = pgwire::messages::startup::ParameterStatus::new(
                name.to_string(),
                now.cloned().unwrap_or_default(),
            );
            client
                .send(PgWireBackendMessage::ParameterStatus(status))
                .await?;
        }
    }
    Ok(())
}

/// The `TimeZone` of a client's startup packet, as the session keeps it, if it is one.
fn startup_zone<C: ClientInfo>(client: &C) -> Option<String> {
    startup_settings(client)
        .into_iter()
        .rev()
        .find(|(name, _)| name == "timezone")
        .map(|(_, zone)| zone)
}

/// The settings a client's startup packet asks for, as the session keeps them: parameters named
/// like a setting Rivulet acts on (`TimeZone`, sent by pgjdbc), and the `-c name=value` (or
/// `--name=value`) pairs of its `options` (libpq's `PGOPTIONS`). A value the setting refuses is
/// left out, so the session keeps its default rather than failing to start.
fn startup_settings<C: ClientInfo>(client: &C) -> Vec<(String, String)> {
    let metadata = client.metadata();
    let mut pairs: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("timezone"))
        .map(|(_, v)| ("timezone".to_string(), v.clone()))
        .collect();
    if let Some(options) = metadata.get("options") {
        pairs.extend(command_line_settings(options));
    }
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            let value = crate::exec::checked_setting(&name, value).ok()?;
            Some((name, value))
        })
        .collect()
}

/// `-c name=value` and `--name=value` pairs of a startup `options` string, as Postgres reads it:
/// words split at blanks, a backslash keeping the next character (a blank) in the word, names
/// in lower case with `-` read as `_`.
fn command_line_settings(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let pair = if w == "-c" {
            words.next()
        } else {
            (w.strip_prefix("-c").or_else(|| w.strip_prefix("--"))).map(str::to_string)
        };
        if let Some((name, value)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            out.push((name.to_lowercase().replace('-', "_"), value.to_string()));
        }
    }
    out
}

/// The session of a connection, created at its first statement from the startup user and database.
type SessionSlot = Arc<Mutex<Option<Session>>>;

/// The handlers of one client connection.
pub struct Connection {
    frontend: Arc<Frontend>,
    session: SessionSlot,
    parser: Arc<StatementParser>,
    /// Tells when the client has gone, to stop its running statement.
    watch: Arc<ClientWatch>,
    /// Ends the connection when it idles too long inside a block.
    idle: Arc<IdleTimer>,
}

impl Connection {
    /// Whether clients authenticate with SCRAM (a password is configured).
    pub fn uses_scram(&self) -> bool {
        self.frontend.scram.is_some()
    }

    /// Handlers for a new socket.
    pub fn new(frontend: Arc<Frontend>, watch: ClientWatch) -> Self {
        let session: SessionSlot = Arc::new(Mutex::new(None));
        let watch = Arc::new(watch);
        let idle = Arc::new(IdleTimer::new(Arc::clone(&watch)));
        let parser = Arc::new(StatementParser {
            shared: Arc::clone(&frontend.shared),
            session: Arc::clone(&session),
            idle: Arc::clone(&idle),
        });
        Self {
            frontend,
            session,
            parser,
            watch,
            idle,
        }
    }
}

/// The connection's cancel handle, registered under its cancel key. pgwire would drop a running
/// statement when it fires (cutting a commit in half, skipping the session's bookkeeping), so after
/// startup pgwire gets a handle nothing fires, and this one stops statements through their
/// [`Interrupt`] instead.
pub struct CancelHandle(Arc<ConnectionHandle>);

/// Takes the cancel handle registered at startup away from pgwire (see [`CancelHandle`]).
pub fn keep_cancel_handle<C: ClientInfo>(client: &C) {
    let extensions = client.session_extensions();
    if extensions.get::<CancelHandle>().is_some() {
        return;
    }
    if let Some(handle) = extensions.get::<Arc<ConnectionHandle>>() {
        extensions.insert(CancelHandle(Arc::clone(handle.as_ref())));
        extensions.insert(Arc::new(ConnectionHandle::new()));
    }
}

/// Runs `work` (statements of one client message, which stop on `interrupt`), firing `interrupt`
/// on a cancel request or when the client goes away, and waits for the statements to stop. The
/// NOTICEs they send go to the client as they come, before their results.
async fn supervised<T, C>(
    client: &mut C,
    watch: &ClientWatch,
    interrupt: &Interrupt,
    notices: Notices,
    work: impl Future<Output = T>,
) -> T
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
{
    let cancel = match client.session_extensions().get::<CancelHandle>() {
        Some(handle) => Some(handle.0.start_query().await),
        None => None,
    };
    let signal = async {
        let cancel = async {
            // An error means the handle was replaced: no cancel for this statement.
            if let Some(rx) = cancel
                && rx.await.is_ok()
            {
                return Reason::Cancel;
            }
            std::future::pending().await
        };
        tokio::select! {
            reason = cancel => reason,
            () = watch.closed() => Reason::ClientGone,
        }
    };
    let mut notices = notices.rx.lock().await;
    tokio::pin!(work);
    tokio::pin!(signal);
    let mut fired = false;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            reason = &mut signal, if !fired => {
                interrupt.fire(reason);
                fired = true;
            }
            Some(notice) = notices.recv() => send_notice(client, notice).await,
        }
    };
    while let Ok(notice) = notices.try_recv() {
        send_notice(client, notice).await;
    }
    result
}

/// Sends one NOTICE; a client that is gone is noticed by the statement's supervision.
async fn send_notice<C>(client: &mut C, notice: ErrorInfo)
where
    C: Sink<PgWireBackendMessage> + Unpin,
{
    let message = PgWireBackendMessage::NoticeResponse(notice.into());
    if client.send(message).await.is_ok() {
        let _ = client.flush().await;
    }
}

async fn session_of<'a, C: ClientInfo>(
    shared: &Arc<Shared>,
    slot: &'a SessionSlot,
    client: &C,
) -> Result<MutexGuard<'a, Option<Session>>, SqlError> {
    let mut guard = slot.lock().await;
    if guard.is_none() {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_else(|| "root".into());
        let database = client
            .metadata()
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_else(|| user.clone());
        let database = if database.is_empty() {
            DEFAULT_DATABASE.to_string()
        } else {
            database
        };
        let mut session = Session::new(Arc::clone(shared), &user, &database)?;
        // The startup packet's `application_name` is the session's, as in Postgres (psql sends
        // `psql`; monitoring shows it).
        if let Some(name) = client.metadata().get("application_name") {
            session
                .settings
                .insert("application_name".into(), name.clone());
        }
        // pgjdbc sends the JVM's zone at startup, libpq `PGOPTIONS`' `-c` settings.
        for (name, value) in startup_settings(client) {
            session.settings.insert(name, value);
        }
        *guard = Some(session);
    }
    Ok(guard)
}

fn session_mut<'a>(
    guard: &'a mut MutexGuard<'_, Option<Session>>,
) -> Result<&'a mut Session, SqlError> {
    guard
        .as_mut()
        .ok_or_else(|| SqlError::internal("session missing"))
}

/// Encodes a batch's rows with `arrow-pg`, value by value, except NULL intervals, which its
/// encoder does not check for (it would send `00:00:00`), timestamp differences (durations), whose
/// days go apart from their time as in their text, decimals, whose display scale is their
/// column's rule ([`crate::pg::numeric`]), and the columns whose declared type has a binary form
/// of its own ([`crate::pg::wire_types`]).
fn encode_rows(
    fields: &Arc<Vec<FieldInfo>>,
    batch: &RecordBatch,
) -> Vec<PgWireResult<pgwire::messages::data::DataRow>> {
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut encoded = Ok(());
        for (col, array) in batch.columns().iter().enumerate() {
            let field = schema.field(col);
            let info = &fields[col];
            encoded = if array.is_null(row) && matches!(field.data_type(), DataType::Interval(_)) {
                encoder.encode_field(&None::<i64>)
            } else if matches!(field.data_type(), DataType::Duration(_))
                && info.format() == FieldFormat::Binary
            {
                let bytes = crate::text_out::duration_binary(array.as_ref(), row);
                encoder.encode_field(&bytes.as_ref().map(|b| b.as_slice()))
            } else if let Some(done) =
                crate::pg::numeric::encode(&mut encoder, array, row, field, info.format())
            {
                done
            } else if let Some(done) = crate::pg::wire_types::encode(
                &mut encoder,
                array,
                row,
                info.datatype(),
                info.format(),
            ) {
                done
            } else {
                arrow_pg::encoder::encode_value(&mut encoder, array, row, field, info)
            };
            if encoded.is_err() {
                break;
            }
        }
        let row = encoder.take_row();
        rows.push(encoded.map(|()| row));
    }
    rows
}

/// `column` (of `field`) as the text a client reads in the text format: each value through
/// the same encoding [`respond`] gives it, Postgres' output function for its type
/// ([`crate::pg::output`] makes a cast to text of such values this).
/// A `timestamptz` is written in `zone`, or else in the zone its type is labelled with.
pub(crate) fn output_text(
    field: &Field,
    column: &ArrayRef,
    zone: Option<&str>,
) -> Result<ArrayRef, SqlError> {
    let schema = Arc::new(Schema::new(vec![field.clone().with_nullable(true)]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(column)])
        .map_err(SqlError::from_arrow)?;
    let fields = Arc::new(fields_of(&schema, &Format::UnifiedText)?);
    let batch = crate::pg::wire_types::padded(&batch).unwrap_or(batch);
    let batch =
        crate::text_out::postgres_text(batch, |_| true, zone).map_err(SqlError::from_arrow)?;
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 8);
    for row in encode_rows(&fields, &batch) {
        let row = row.map_err(|e| SqlError::internal(format!("text output: {e}")))?;
        // One field: its length (-1 for NULL), then its bytes.
        let (length, value) = row.data.split_at(4.min(row.data.len()));
        match <[u8; 4]>::try_from(length).map(i32::from_be_bytes) {
            Ok(n) if n >= 0 => out.append_value(String::from_utf8_lossy(value)),
            _ => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Turns an outcome into pgwire's response, encoding rows in `format`.
/// `timestamptz` values are printed in `zone`, the session's.
fn respond(outcome: Outcome, format: &Format, zone: Option<&str>) -> Result<Response, SqlError> {
    Ok(match outcome {
        Outcome::Rows {
            schema,
            batches,
            tag,
        } => {
            let (schema, batches) =
                crate::pg::dscale::render(schema, batches, |i| format.is_binary(i))?;
            let fields = Arc::new(fields_of(&schema, format)?);
            let rows: Vec<PgWireResult<pgwire::messages::data::DataRow>> = batches
                .into_iter()
                .flat_map(|b: RecordBatch| {
                    let b = crate::pg::wire_types::padded(&b).unwrap_or(b);
                    let text = |i: usize| fields[i].format() == FieldFormat::Text;
                    match crate::text_out::postgres_text(b, text, zone) {
                        Ok(b) => encode_rows(&fields, &b),
                        Err(e) => vec![Err(PgWireError::from(SqlError::from_arrow(e)))],
                    }
                })
                .collect();
            let mut response = QueryResponse::new(fields, stream::iter(rows));
            response.set_command_tag(tag);
            Response::Query(response)
        }
        Outcome::Command(tag) => Response::Execution(command_tag(&tag)),
        Outcome::TxStart(tag) => Response::TransactionStart(Tag::new(tag)),
        Outcome::TxEnd(tag) => Response::TransactionEnd(Tag::new(tag)),
        Outcome::CopyIn { columns } => {
            Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
        }
    })
}

/// `INSERT 0 5` is sent as is; pgwire's `Tag` wants the row count separately.
fn command_tag(tag: &str) -> Tag {
    match tag.rsplit_once(' ') {
        Some((head, n)) if head != "CREATE" && head != "DROP" => match n.parse::<usize>() {
            Ok(rows) => Tag::new(head).with_rows(rows),
            Err(_) => Tag::new(tag),
        },
        _ => Tag::new(tag),
    }
}

fn fields_of(schema: &Schema, format: &Format) -> Result<Vec<FieldInfo>, SqlError> {
    let schema = crate::pg::names::visible(schema);
    // `arrow-pg` sends no list of lists; Postgres' multidimensional arrays are rectangular and
    // have their own wire form, which a list of lists of any lengths does not map onto.
    if let Some(nested) = schema
        .fields()
        .iter()
        .find(|f| is_nested_list(f.data_type()))
    {
        return Err(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "column \"{}\" is an array of arrays, which results cannot hold",
                nested.name()
            ),
        )
        .with_hint("Select its elements, with unnest or flatten, or an element such as m[1]."));
    }
    let fields =
        arrow_pg::datatypes::arrow_schema_to_pg_fields(&schema, format, None).map_err(|e| {
            SqlError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("result type is not supported: {e}"),
            )
        })?;
    Ok(fields
        .into_iter()
        .zip(schema.fields())
        .map(|(info, field)| {
            // An untyped NULL in a select list is `text` to Postgres' clients, not `unknown`.
            let retyped = if crate::pg::oid_arrays::is_marked(field) {
                Some(Type::OID_ARRAY)
            } else if *field.data_type() == DataType::Null {
                Some(Type::TEXT)
            } else {
                crate::pg::wire_types::declared(field)
            };
            let info = match retyped {
                Some(t) => FieldInfo::new(
                    info.name().to_string(),
                    info.table_id(),
                    info.column_id(),
                    t,
                    info.format(),
                )
                .with_format_options(Arc::clone(info.format_options())),
                None => info,
            };
            // Postgres' `typlen` and, for numeric(p,s), `atttypmod`: drivers size and scale
            // columns by them (JDBC's getPrecision/getScale, psycopg's description).
            let size = type_size(info.datatype());
            let info = info.with_type_size(size);
            match field.data_type() {
                // Only a column declared numeric(p,s) (or a value read from one as it is) has a
                // type modifier: a computed numeric is plain `numeric` in Postgres.
                DataType::Decimal128(p, s)
                    if *s >= 0
                        && field
                            .metadata()
                            .contains_key(rivulet_planner::types::NUMERIC_TYPMOD) =>
                {
                    info.with_type_modifier(((i32::from(*p) << 16) | i32::from(*s)) + 4)
                }
                DataType::Decimal128(..) => info,
                // `character(n)`, `character varying(n)`: n + 4, Postgres' varlena header
                // included.
                _ => {
                    let n = crate::pg::character::declared_length(field);
                    match n.and_then(|n| i32::try_from(n).ok()) {
                        Some(n) if field.data_type().is_string() => info.with_type_modifier(n + 4),
                        _ => info,
                    }
                }
            }
        })
        .collect())
}

/// Whether `t` is a list of lists.
fn is_nested_list(t: &DataType) -> bool {
    match t {
        DataType::List(item) | DataType::LargeList(item) => {
            matches!(item.data_type(), DataType::List(_) | DataType::LargeList(_))
        }
        _ => false,
    }
}

/// A type's `pg_type.typlen`: its width in bytes, or -1 for a variable-width type.
fn type_size(t: &Type) -> i16 {
    match *t {
        Type::BOOL | Type::CHAR => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE | Type::OID | Type::REGTYPE | Type::REGCLASS => 4,
        Type::NAME => 64,
        Type::INT8 | Type::FLOAT8 | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ => 8,
        Type::INTERVAL => 16,
        _ => -1,
    }
}

/// Whether `statement` is `ROLLBACK TO SAVEPOINT`, which ends a failed block's failed state.
/// pgwire keeps a failed block failed (status `E`) until the block ends, so before running one in
/// a failed block the handlers below set the status back to `T`: if the rollback succeeds the
/// client hears `T`, as from Postgres, and if it fails pgwire sets `E` again.
fn rolls_back_to_savepoint(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Sql { stmt, .. } if matches!(
            stmt.as_ref(),
            datafusion::sql::sqlparser::ast::Statement::Rollback { savepoint: Some(_), .. }
        )
    )
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Parsed here only in a failed block, where little else runs.
        if client.transaction_status() == TransactionStatus::Error
            && parse_sql(&query.query).is_ok_and(|s| {
                s.first()
                    .is_some_and(|p| rolls_back_to_savepoint(&p.statement))
            })
        {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        message_arrived(&self.idle)?;
        let mut guard = session_of(&self.frontend.shared, &self.session, client).await?;
        let session = session_mut(&mut guard)?;
        if let Some(response) = self.try_subscribe(client, session, query).await {
            self.idle.arm(session.idle_timeout());
            return response;
        }
        let before = reported(session);
        let responses = self.run_query(client, session, query).await;
        report_changes(client, &before, session).await?;
        self.idle.arm(session.idle_timeout());
        responses
    }
}

impl Connection {
    /// Streams a simple query that is one `SUBSCRIBE` (see [`crate::subscribe`]); `None` for any
    /// other query.
    async fn try_subscribe<C>(
        &self,
        client: &mut C,
        session: &mut Session,
        query: &str,
    ) -> Option<PgWireResult<Vec<Response>>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let head = query.trim_start().get(..9)?.to_ascii_lowercase();
        if !head.starts_with("subscribe") && !head.starts_with("copy") {
            return None;
        }
        let parsed = parse_sql(query).ok()?;
        let [parsed] = parsed.as_slice() else {
            return None;
        };
        let response = self.subscribe(client, session, parsed).await?;
        Some(Ok(vec![response]))
    }

    /// Streams `parsed` if it is a `SUBSCRIBE` (`None` otherwise), in either protocol: the COPY
    /// OUT data goes to `client` while it runs; the response is its end (`COPY n`) or error.
    async fn subscribe<C>(
        &self,
        client: &mut C,
        session: &mut Session,
        parsed: &Parsed,
    ) -> Option<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Statement::Subscribe {
            relation,
            snapshot,
            since,
        } = &parsed.statement
        else {
            return None;
        };
        if let Err(e) = session.refuse_in_failed_block(&parsed.statement) {
            return Some(Response::Error(Box::new(e.into_error_info())));
        }
        let interrupt = Interrupt::new();
        let timeout = crate::interrupt::timeout_setting(session.settings.get("statement_timeout"));
        let interrupt = interrupt.with_deadline(timeout);
        session.interrupt = interrupt.clone();
        let request = crate::subscribe::Request {
            relation,
            snapshot: *snapshot,
            since: *since,
        };
        let watch = &self.watch;
        let cancel = match client.session_extensions().get::<CancelHandle>() {
            Some(handle) => Some(handle.0.start_query().await),
            None => None,
        };
        let streamed = {
            let work = interrupt.run(crate::subscribe::stream(client, session, request));
            tokio::pin!(work);
            let signal = async {
                let cancel = async {
                    if let Some(rx) = cancel
                        && rx.await.is_ok()
                    {
                        return Reason::Cancel;
                    }
                    std::future::pending().await
                };
                tokio::select! {
                    reason = cancel => reason,
                    () = watch.closed() => Reason::ClientGone,
                }
            };
            tokio::select! {
                result = &mut work => result,
                reason = signal => {
                    interrupt.fire(reason);
                    work.await
                }
            }
        };
        Some(match streamed {
            Ok(lines) => Response::Execution(Tag::new("COPY").with_rows(lines as usize)),
            Err(e) => {
                if session.tx == crate::session::TxState::Open {
                    session.tx = crate::session::TxState::Aborted;
                }
                Response::Error(Box::new(e.into_error_info()))
            }
        })
    }

    /// The statements of a simple query, each answered in turn until one fails.
    async fn run_query<C>(
        &self,
        client: &mut C,
        session: &mut Session,
        query: &str,
    ) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
    {
        let statements = match parse_sql(query) {
            Ok(s) => s
                .into_iter()
                .map(crate::pg::rewrite::statement)
                .collect::<Vec<_>>(),
            Err(e) => {
                if session.tx == crate::session::TxState::Open {
                    session.tx = crate::session::TxState::Aborted;
                }
                return Err(SqlError::from(e).into());
            }
        };
        // A string of comments and semicolons only is an empty query to Postgres: its clients
        // (libpq, pgx health checks) wait for EmptyQueryResponse.
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let interrupt = Interrupt::new();
        session.interrupt = interrupt.clone();
        let notices = session.notices();
        let run = async {
            let mut responses = Vec::with_capacity(statements.len());
            for parsed in &statements {
                match session.run(parsed, None).await {
                    Ok(outcome) => {
                        let copy = matches!(outcome, Outcome::CopyIn { .. });
                        let zone = session.time_zone();
                        responses.push(respond(outcome, &Format::UnifiedText, zone.as_deref())?);
                        if copy {
                            // The rest of the string runs only after the COPY data, which this
                            // front end does not queue; Postgres clients send COPY on its own.
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(code = e.code, message = %e.message, "statement failed");
                        let e = e.locate(query);
                        responses.push(Response::Error(Box::new(e.into_error_info())));
                        break;
                    }
                }
            }
            Ok::<_, SqlError>(responses)
        };
        Ok(supervised(client, &self.watch, &interrupt, notices, run).await?)
    }
}

/// A statement prepared with Parse: what Describe reports and Execute runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    parsed: Parsed,
    /// The string the client sent, which the statement's spans (and so error positions) are
    /// relative to.
    sql: String,
    /// Parameter types inferred by DataFusion, by position (`$1` first).
    param_types: Vec<Option<DataType>>,
    /// How many parameters the statement takes, when it was planned (`$n` up to the highest).
    param_count: Option<usize>,
    /// Parameter types the Arrow types cannot tell (`oid[]`), by position.
    param_pg_types: Vec<Option<Type>>,
    /// Result columns, if the statement returns rows.
    result: Option<Arc<Schema>>,
}

/// Parses and plans statements for the extended protocol.
pub struct StatementParser {
    shared: Arc<Shared>,
    session: SessionSlot,
    idle: Arc<IdleTimer>,
}

/// Disarms the idle timer as a message arrives; FATAL `25P03` if it already ended the connection.
fn message_arrived(idle: &IdleTimer) -> PgWireResult<()> {
    if idle.disarm() {
        Ok(())
    } else {
        Err(PgWireError::UserError(Box::new(crate::idle::error())))
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        message_arrived(&self.idle)?;
        let mut guard = session_of(&self.shared, &self.session, client).await?;
        let session = session_mut(&mut guard)?;
        let prepared = async {
            let mut statements = parse_sql(sql).map_err(SqlError::from)?;
            if statements.len() > 1 {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "cannot insert multiple commands into a prepared statement",
                ));
            }
            let Some(parsed) = statements.pop().map(crate::pg::rewrite::statement) else {
                return Ok(None);
            };
            // As Postgres: in a failed block only COMMIT and ROLLBACK may even be parsed.
            session.refuse_in_failed_block(&parsed.statement)?;
            describe(session, parsed, sql).await.map(Some)
        }
        .await
        .map_err(|e| e.locate(sql));
        session.end_statement();
        if prepared.is_err() && session.tx == crate::session::TxState::Open {
            session.tx = crate::session::TxState::Aborted;
        }
        Ok(prepared?)
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        stmt.param_types
            .iter()
            .enumerate()
            .map(
                |(i, t)| match (stmt.param_pg_types.get(i).cloned().flatten(), t) {
                    (Some(pg), _) => Ok(pg),
                    (None, Some(t)) => arrow_pg::datatypes::into_pg_type(t),
                    (None, None) => Ok(Type::UNKNOWN),
                },
            )
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.result {
            Some(schema) => Ok(fields_of(schema, format.unwrap_or(&Format::UnifiedText))?),
            None => Ok(Vec::new()),
        }
    }
}

/// Works out a statement's parameter and result types without running it (SHOW, a pure read, is run).
async fn describe(session: &mut Session, parsed: Parsed, sql: &str) -> Result<Prepared, SqlError> {
    use datafusion::sql::sqlparser::ast::Statement as S;
    let mut prepared = Prepared {
        parsed,
        sql: sql.to_string(),
        param_types: Vec::new(),
        param_count: None,
        param_pg_types: Vec::new(),
        result: None,
    };
    if let Statement::Fetch { cursor, .. } = &prepared.parsed.statement {
        // A FETCH's rows are its cursor's, known once the cursor is declared.
        prepared.result = Some(std::sync::Arc::clone(session.cursor(cursor)?.schema()));
        return Ok(prepared);
    }
    let Statement::Sql { stmt, .. } = &prepared.parsed.statement else {
        return Ok(prepared);
    };
    match stmt.as_ref() {
        S::Explain { statement, .. } if matches!(statement.as_ref(), S::CreateView(_)) => {
            prepared.result = Some(Arc::new(Schema::new(vec![
                datafusion::arrow::datatypes::Field::new("QUERY PLAN", DataType::Utf8, false),
            ])));
        }
        S::Query(_) | S::Explain { .. } | S::Insert(_) | S::Update(_) | S::Delete(_) => {
            let ctx = session.context()?.clone();
            // An INSERT's ON CONFLICT: its rows are planned as a plain INSERT's.
            let (stmt, on_conflict) = crate::exec::OnConflict::split(stmt)?;
            // A RETURNING list: planned apart; its columns are the result's.
            let (stmt, returning) = crate::exec::Returning::split(stmt.as_ref());
            if let Some(returning) = &returning {
                let plan = returning.plan(&ctx).await?;
                prepared.result = Some(Arc::new(plan.schema().as_arrow().clone()));
            }
            let stmt = session.spell_out_columns(stmt.as_ref())?;
            // An UPDATE or DELETE that reads other relations runs as a query.
            let plan = if crate::exec::joined::reads_others(&stmt) {
                crate::exec::joined::plan(session, &stmt).await?
            } else {
                plan_query(&ctx, &stmt).await?
            };
            session.check_planned_assignments(&plan, &stmt)?;
            crate::pg::regclass::resolve_constants(&ctx, &plan).await?;
            let mut types = plan.get_parameter_types()?;
            // Parameters in ON CONFLICT DO UPDATE, which the INSERT's plan does not have.
            if let Some(conflict) = &on_conflict
                && let Some(name) = &conflict.table
                && let Ok(table) = session.resolve_table(name)
            {
                for (id, t) in conflict.parameter_types(&ctx, &table)? {
                    types.entry(id).or_insert(Some(t));
                }
            }
            let count = types
                .keys()
                .filter_map(|k| k.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()))
                .max();
            let casts = cast_placeholders(&plan);
            prepared.param_types = (1..=count.unwrap_or(0))
                .map(|i| {
                    let id = format!("${i}");
                    types.get(&id).cloned().flatten().or_else(|| {
                        // Only a type the wire can describe (not `int[][]`, `numeric(50,2)`).
                        casts
                            .get(&id)
                            .map(|f| f.data_type())
                            .filter(|t| arrow_pg::datatypes::into_pg_type(t).is_ok())
                            .cloned()
                    })
                })
                .collect();
            // The text's own `$n` count too: a catalog rewrite may drop a placeholder's use.
            let written = highest_placeholder(&prepared.parsed.text);
            if prepared.param_types.len() < written {
                prepared.param_types.resize(written, None);
            }
            prepared.param_count = Some(prepared.param_types.len());
            prepared.param_pg_types =
                crate::pg::oid_arrays::parameter_types(&stmt, prepared.param_types.len());
            // A parameter compared with or stored into a `jsonb`, `uuid` or `character(n)`
            // column, or cast to `jsonb`, is of that type, as in Postgres (its Arrow type says text). Not
            // `varchar`: Postgres compares it as `text`.
            let fields = plan.get_parameter_fields()?;
            for (i, slot) in prepared.param_pg_types.iter_mut().enumerate() {
                let id = format!("${}", i + 1);
                let field = fields.get(&id).cloned().flatten();
                let declared = field
                    .as_deref()
                    .or_else(|| casts.get(&id).map(|f| f.as_ref()))
                    .and_then(crate::pg::wire_types::declared)
                    .filter(|t| matches!(*t, Type::JSONB | Type::JSON | Type::BPCHAR | Type::UUID));
                if slot.is_none() {
                    *slot = declared;
                }
            }
            if matches!(stmt.as_ref(), S::Query(_) | S::Explain { .. }) {
                let schema = Arc::new(plan.schema().as_arrow().clone());
                prepared.result = Some(crate::pg::oid_arrays::mark_result(&stmt, schema));
            }
        }
        S::ShowVariable { .. }
        | S::ShowTables { .. }
        | S::ShowDatabases { .. }
        | S::ShowViews { .. } => {
            if let Ok(Outcome::Rows { schema, .. }) = session.run(&prepared.parsed, None).await {
                prepared.result = Some(schema);
            }
        }
        _ => {}
    }
    Ok(prepared)
}

/// The highest `$n` in `sql` (0 if it has none).
fn highest_placeholder(sql: &str) -> usize {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map(|tokens| {
            tokens
                .iter()
                .filter_map(|t| match t {
                    Token::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok(),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Types Postgres infers for placeholders and DataFusion leaves open: the type a placeholder is
/// cast to (`$1::int[]`), and an array of the other side's type for `x = ANY($1)` (planned as
/// `array_has($1, x)`).
fn cast_placeholders(
    plan: &datafusion::logical_expr::LogicalPlan,
) -> std::collections::HashMap<String, datafusion::arrow::datatypes::FieldRef> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr, ExprSchemable, TryCast};
    let mut found = std::collections::HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        let input = node.inputs().first().map(|i| Arc::clone(i.schema()));
        node.apply_expressions(|e| {
            e.apply(|e| {
                match e {
                    Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                        if let Expr::Placeholder(p) = expr.as_ref() {
                            found
                                .entry(p.id.clone())
                                .or_insert_with(|| Arc::clone(field));
                        }
                    }
                    Expr::ScalarFunction(f) if f.name() == "array_has" => {
                        if let [Expr::Placeholder(p), other] = f.args.as_slice()
                            && let Some(schema) = &input
                            && let Ok(t) = other.get_type(schema)
                        {
                            found.entry(p.id.clone()).or_insert_with(|| {
                                Arc::new(datafusion::arrow::datatypes::Field::new(
                                    "item",
                                    DataType::new_list(t, true),
                                    true,
                                ))
                            });
                        }
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        Arc::clone(&self.parser)
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        message_arrived(&self.idle)?;
        // pgwire's own Sync; then the client has the connection back.
        client.portal_store().rm_portal(DEFAULT_NAME);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                client.transaction_status(),
            )))
            .await?;
        client.flush().await?;
        let timeout = self
            .session
            .lock()
            .await
            .as_ref()
            .and_then(Session::idle_timeout);
        self.idle.arm(timeout);
        Ok(())
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        message_arrived(&self.idle)?;
        // pgwire's own Bind, after Postgres' check: in a failed block only COMMIT and ROLLBACK bind.
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                if let Some(session) = self.session.lock().await.as_ref() {
                    session.refuse_in_failed_block(&statement.statement.parsed.statement)?;
                }
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(SqlError::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!(
                            "bind message supplies {} parameters, but prepared statement \"{}\" requires 0",
                            message.parameters.len(),
                            wire_name(statement_name)
                        ),
                    )
                    .into());
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        message_arrived(&self.idle)?;
        if client.transaction_status() == TransactionStatus::Error {
            let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
            let rollback_to = client
                .portal_store()
                .get_portal(name)
                .is_some_and(|p| match p {
                    Entry::Value(p) => {
                        rolls_back_to_savepoint(&p.statement.statement.parsed.statement)
                    }
                    Entry::Empty => false,
                });
            if rollback_to {
                client.set_transaction_status(TransactionStatus::Transaction);
            }
        }
        self._on_execute(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        if let Some(count) = prepared.param_count {
            // As PostgreSQL: Parse may declare more parameters than the text uses.
            let required = count.max(portal.statement.parameter_types.len());
            if portal.parameter_len() != required {
                return Err(SqlError::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "bind message supplies {} parameters, but prepared statement \"{}\" requires {required}",
                        portal.parameter_len(),
                        wire_name(&portal.statement.id)
                    ),
                )
                .into());
            }
        }
        let params: Option<ParamValues> = if portal.parameter_len() == 0 {
            None
        } else {
            let wanted: Vec<Option<&DataType>> =
                prepared.param_types.iter().map(|t| t.as_ref()).collect();
            let types = crate::pg::wire_types::decoded_types(portal, &wanted);
            let values = match crate::pg::oid_arrays::decode(portal, &prepared.param_pg_types)
                .map_err(bad_parameter)?
            {
                None => arrow_pg::datatypes::df::deserialize_parameters(portal, &types),
                Some((rest, oid_arrays)) => {
                    // Those positions are NULLs for arrow-pg, of a type it keeps them for.
                    let int_list = DataType::new_list(DataType::Int32, true);
                    let types: Vec<Option<&DataType>> = types
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            if oid_arrays.contains_key(&i) {
                                Some(&int_list)
                            } else {
                                *t
                            }
                        })
                        .collect();
                    arrow_pg::datatypes::df::deserialize_parameters(&rest, &types).map(|values| {
                        let mut values = values;
                        if let ParamValues::List(list) = &mut values {
                            for (i, v) in oid_arrays {
                                if let Some(slot) = list.get_mut(i) {
                                    *slot = v.into();
                                }
                            }
                        }
                        values
                    })
                }
            };
            let mut values = values.map_err(bad_parameter)?;
            crate::pg::wire_types::numeric_parameters(&mut values, portal, &wanted)?;
            crate::pg::wire_types::jsonb_parameters(&mut values, portal, &prepared.param_pg_types);
            crate::pg::dscale::mark_parameters(&mut values, portal);
            Some(values)
        };
        let mut guard = session_of(&self.frontend.shared, &self.session, client).await?;
        let session = session_mut(&mut guard)?;
        if let Some(response) = self.subscribe(client, session, &prepared.parsed).await {
            return match response {
                Response::Error(e) => Err(PgWireError::UserError(e)),
                response => Ok(response),
            };
        }
        let interrupt = Interrupt::new();
        session.interrupt = interrupt.clone();
        let notices = session.notices();
        let before = reported(session);
        let run = async {
            session
                .run(&prepared.parsed, params.as_ref())
                .await
                .map_err(|e| e.locate(&prepared.sql))
        };
        let outcome = supervised(client, &self.watch, &interrupt, notices, run).await;
        report_changes(client, &before, session).await?;
        let outcome = outcome?;
        if let Outcome::Rows { schema, .. } = &outcome
            && !same_result(prepared, &crate::pg::dscale::shown(schema))
        {
            // Postgres re-plans a statement whose tables changed, and refuses to send rows
            // that do not match the RowDescription the client was given at Describe.
            return Err(SqlError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "cached plan must not change result type",
            )
            .into());
        }
        let zone = session.time_zone();
        Ok(respond(
            outcome,
            &portal.result_column_format,
            zone.as_deref(),
        )?)
    }
}

/// Parameter decoding errors are the client's (22P02/22023), never ours.
fn bad_parameter(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(_) => e,
        other => SqlError::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid parameter value: {other}"),
        )
        .into(),
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.session.lock().await;
        if let Some(copy) = guard.as_mut().and_then(|s| s.copy.as_mut()) {
            copy.push(&copy_data.data)?;
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let rows = {
            let mut guard = self.session.lock().await;
            let session = session_mut(&mut guard)?;
            let rows = session.finish_copy().await?;
            if session.implicit_flush() {
                let views = session.own_views();
                session.shared.jobs.flush_views(&views).await?;
            }
            rows
        };
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_mut() {
            session.copy = None;
        }
        SqlError::new(
            sqlstate::QUERY_CANCELED,
            format!("COPY from stdin failed: {}", fail.message),
        )
        .into()
    }
}

/// Startup without a password (loopback only): checks the database, assigns the cancel key and
/// sends the parameters drivers read.
pub struct TrustStartup {
    frontend: Arc<Frontend>,
}

#[async_trait]
impl StartupHandler for TrustStartup {
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
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let database = client
            .metadata()
            .get(METADATA_DATABASE)
            .or_else(|| client.metadata().get(METADATA_USER))
            .cloned()
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        if !self.frontend.shared.catalog.database_exists(&database) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                sqlstate::UNDEFINED_DATABASE.into(),
                format!("database \"{database}\" does not exist"),
            ))));
        }
        let (pid, key) = self.frontend.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.frontend.connections.register(pid, key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        finish_authentication(client, self.frontend.parameters.as_ref()).await?;
        Ok(())
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(self.clone_handle())
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(self.clone_handle())
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::new(self.clone_handle())
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        crate::auth::startup_handler(&self.frontend)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(Arc::clone(
            &self.frontend.connections,
        )))
    }

    fn error_handler(&self) -> Arc<impl pgwire::api::ErrorHandler> {
        Arc::new(PostgresMessages)
    }
}

/// Words pgwire's own errors as PostgreSQL does (same SQLSTATE, Postgres' message).
struct PostgresMessages;

impl pgwire::api::ErrorHandler for PostgresMessages {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let (code, message) = match error {
            PgWireError::StatementNotFound(name) => (
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{}\" does not exist", wire_name(name)),
            ),
            PgWireError::PortalNotFound(name) => (
                sqlstate::INVALID_CURSOR_NAME,
                format!("portal \"{}\" does not exist", wire_name(name)),
            ),
            _ => return,
        };
        *error = SqlError::new(code, message).into();
    }
}

/// A statement or portal name as the client sent it (pgwire names the unnamed one itself).
fn wire_name(name: &str) -> &str {
    if name == DEFAULT_NAME { "" } else { name }
}

impl Connection {
    /// A message failed before reaching a handler (`socket.rs`): as after any error, an open
    /// block is aborted.
    pub async fn fail_block(&self) {
        if let Some(session) = self.session.lock().await.as_mut()
            && session.tx == crate::session::TxState::Open
        {
            session.tx = crate::session::TxState::Aborted;
        }
    }

    fn clone_handle(&self) -> Connection {
        Connection {
            frontend: Arc::clone(&self.frontend),
            session: Arc::clone(&self.session),
            parser: Arc::clone(&self.parser),
            watch: Arc::clone(&self.watch),
            idle: Arc::clone(&self.idle),
        }
    }
}

impl TrustStartup {
    /// A trust handler for `frontend`.
    pub fn new(frontend: Arc<Frontend>) -> Self {
        Self { frontend }
    }
}

/// Whether rows of `schema` match the result described at Parse: the same column names and wire
/// types (Postgres' `equalRowTypes`). No description means no rows were announced. With
/// parameters, only names count: a parameter's type may be settled only by its bound value.
fn same_result(prepared: &Prepared, schema: &Schema) -> bool {
    let Some(described) = prepared.result.as_deref() else {
        return false;
    };
    let typed = prepared.param_count.unwrap_or(0) == 0;
    let wire = |s: &Schema| -> Option<Vec<(String, Option<Type>)>> {
        fields_of(s, &Format::UnifiedText).ok().map(|fields| {
            fields
                .into_iter()
                .map(|f| (f.name().to_string(), typed.then(|| f.datatype().clone())))
                .collect()
        })
    };
    wire(described) == wire(schema)
}

#[cfg(test)]
mod tests {
    use super::command_line_settings;

    #[test]
    fn reads_startup_options_as_postgres() {
        let pairs = |s: &str| command_line_settings(s);
        assert_eq!(
            pairs("-c TimeZone=Europe/Berlin -cstatement_timeout=5s --application-name=a\\ b"),
            vec![
                ("timezone".to_string(), "Europe/Berlin".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("application_name".to_string(), "a b".to_string()),
            ]
        );
        assert!(pairs("-c").is_empty());
        assert!(pairs("-x y").is_empty());
    }
}
