//! The `sql` capability: queries against the one PostgreSQL server an instance names.
//!
//! The server comes from the instance's own Datadog-style keys (`host`, `port`, `username`,
//! `password`, `dbname`, `ssl`, `query_timeout`), never from the plugin, which only sends SQL
//! text: a plugin can reach no server but its instance's. An instance without `host` has no
//! `sql` capability at all.
//!
//! Design decisions:
//! - One connection per instance, kept across runs (a connection costs a TCP handshake, a
//!   startup exchange and authentication, several times a query's cost) and re-made on the next
//!   query after it breaks. Runs of one instance never overlap, so the per-instance lock is
//!   uncontended.
//! - Statements are prepared once per connection and reused: checks run the same few queries
//!   every interval, and a cached statement saves a round trip per query.
//! - Results are decoded from the binary protocol into typed values (booleans, integers,
//!   floats, exact NUMERIC text, text). Other column types come back as `unsupported` with the
//!   type's name, so the plugin can say which cast to add, rather than as a guess.
//! - A query never outlives its run: its timeout is the instance's `query_timeout` (ms) cut to
//!   the run's deadline. On timeout the server is asked to cancel the query and the connection
//!   is re-made on the next query.
//! - The password appears in no message: targets print as `postgres://user@host:port/db`.
//! - A result is bounded in bytes, not only in rows (`plugins.sql_row_limit`): 50 rows of
//!   10 MB once took one run to 573 MB of RSS, all of it decoded in the host before the plugin
//!   (capped at 64 MiB) could even refuse it. Each row's size is counted as it arrives, before
//!   it is decoded: its values' raw bytes, plus the size of a decoded value for each column so
//!   that many small values count too. When the total passes `plugins.sql_result_limit_kb`
//!   (4 MiB by default) the query fails with an error naming the instance and the bound, the
//!   server is asked to cancel it, the connection is made afresh for the next query, and
//!   nothing of the result is kept or handed over: a cut result would read as a whole one,
//!   and a plugin can shrink its query (`LIMIT`, `left(text, n)`) once told. The other queries
//!   of the run, and every other instance, carry on. What the host holds at most for one query
//!   is then the bound plus the one row being read: tokio-postgres reads a whole row (one
//!   `DataRow` message) before handing it over. A single row larger than the bound (a server
//!   allows 1 GB in one value) is refused before that: on connections without TLS, the host
//!   opens the socket itself and reads the server's messages through [`RowGuard`], which
//!   follows the protocol's framing and fails the connection when a row's header announces
//!   more bytes than the bound, before they arrive. With TLS, tokio-postgres opens the socket
//!   and encrypts in a layer the guard cannot sit under, so there a single huge row is still
//!   read once before it is refused (missing: a guard inside the TLS stream).
//!
//! TLS (`ssl`): `disable`/`false` (the default), and `allow`/`prefer` (which libpq would try
//! TLS for; here they connect in clear) use no TLS; `require`/`true` encrypts without verifying
//! the server (libpq's meaning); `verify-ca`/`verify-full` verify the chain and the name against
//! the system's roots.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Statement};

use super::bindings::kennel::check::sql::{Error, Rows, Value};
use crate::check::{PgTarget, SslMode};

/// Kept back from the run's deadline so the plugin can still report a timed-out query.
const DEADLINE_RESERVE: Duration = Duration::from_millis(50);
/// Prepared statements kept per connection before the cache is cleared.
const MAX_STATEMENTS: usize = 256;
/// Longest wait for a connection, within the run's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What each value of a row counts toward the result's bound besides its raw bytes: what a
/// decoded value takes in the host, so that many tiny or NULL values count too.
const VALUE_OVERHEAD: usize = std::mem::size_of::<Value>();

/// The connection settings of `target`.
fn pg_config(target: &PgTarget, timeout: Duration) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .user(&target.user)
        .dbname(&target.dbname)
        .application_name("kennel")
        .connect_timeout(timeout);
    if let Some(password) = target.password() {
        config.password(password);
    }
    config
}

struct Connection {
    client: Client,
    /// The target it was made for: a reloaded config with another server gets a new one.
    target: PgTarget,
    statements: HashMap<String, Statement>,
    /// The size of a row [`RowGuard`] refused, which broke the connection; 0 for none.
    refused_row: Arc<AtomicU64>,
}

impl Connection {
    /// Asks the server to stop the query in progress, over a connection of its own, and lets go
    /// of this one.
    fn cancel(self) {
        let token = self.client.cancel_token();
        let target = self.target;
        tokio::spawn(async move {
            if let Ok(wire) = open_wire(&target, CONNECT_TIMEOUT).await {
                let _ = token.cancel_query_raw(wire, tokio_postgres::NoTls).await;
            }
        });
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// Every instance's connection.
pub(crate) struct SqlConnections {
    row_limit: usize,
    /// The most bytes a result may hold (see the module docs).
    result_limit: usize,
    slots: Mutex<HashMap<String, Slot>>,
}

impl SqlConnections {
    pub(crate) fn new(row_limit: usize, result_limit: usize) -> Self {
        Self {
            row_limit,
            result_limit,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Closes the connection of an instance that is gone.
    pub(crate) fn forget(&self, instance_id: &str) {
        self.lock().remove(instance_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `statement` for `instance_id` (`who` in messages) on `target`, finishing before
    /// `deadline`.
    pub(crate) async fn query(
        &self,
        who: &str,
        instance_id: &str,
        target: &PgTarget,
        statement: &str,
        deadline: Instant,
    ) -> Result<Rows, Error> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(DEADLINE_RESERVE);
        let timeout = target.query_timeout.map_or(left, |t| t.min(left));
        if timeout.is_zero() {
            return Err(Error::Timeout(
                "the run's deadline leaves no time for this query".to_owned(),
            ));
        }
        let slot = self
            .lock()
            .entry(instance_id.to_owned())
            .or_default()
            .clone();
        {
            let mut connection = slot.lock().await;
            match tokio::time::timeout(
                timeout,
                self.query_on(&mut connection, who, target, statement, timeout),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => {
                    if let Some(open) = connection.take() {
                        open.cancel();
                    }
                    Err(Error::Timeout(format!(
                        "no answer from {target} within {} ms",
                        timeout.as_millis()
                    )))
                }
            }
        }
    }

    async fn query_on(
        &self,
        connection: &mut Option<Connection>,
        who: &str,
        target: &PgTarget,
        statement: &str,
        timeout: Duration,
    ) -> Result<Rows, Error> {
        let reusable = connection
            .as_ref()
            .is_some_and(|c| !c.client.is_closed() && c.target == *target);
        if !reusable {
            *connection =
                Some(connect(target, timeout.min(CONNECT_TIMEOUT), self.result_limit).await?);
        }
        let Some(open) = connection.as_mut() else {
            return Err(Error::Connect(format!("no connection to {target}")));
        };
        let outcome = run_statement(open, statement, self.row_limit, self.result_limit).await;
        let refused_row = open.refused_row.load(Ordering::Relaxed);
        let outcome = match outcome {
            Err(Failure::Postgres(_)) if refused_row > 0 => Err(Failure::TooLarge(format!(
                "with one row of {refused_row} bytes"
            ))),
            other => other,
        };
        match outcome {
            Ok(rows) => Ok(rows),
            Err(Failure::TooLarge(how)) => {
                // The rest of the result is still coming: have the server stop sending it, and
                // leave the connection to drain it alone.
                if let Some(open) = connection.take() {
                    open.cancel();
                }
                Err(Error::Query(format!(
                    "{who}: the result passed the bound of {} KiB {how} (runner `plugins.sql_result_limit_kb`) and was dropped: select fewer or smaller rows (`LIMIT`, `left(column, n)`)",
                    self.result_limit >> 10
                )))
            }
            Err(Failure::Postgres(error)) => {
                if error.as_db_error().is_none() {
                    // The wire broke, not the statement: connect afresh next time.
                    *connection = None;
                }
                Err(describe(target, &error))
            }
        }
    }
}

async fn connect(
    target: &PgTarget,
    timeout: Duration,
    row_limit_bytes: usize,
) -> Result<Connection, Error> {
    let config = pg_config(target, timeout);
    let failed =
        |error: tokio_postgres::Error| Error::Connect(format!("{target}: {}", chain(&error)));
    let refused_row = Arc::new(AtomicU64::new(0));
    let client = match target.ssl {
        SslMode::Disable => {
            let wire = open_wire(target, timeout)
                .await
                .map_err(|e| Error::Connect(format!("{target}: {e}")))?;
            let guarded = RowGuard::new(wire, row_limit_bytes as u64, refused_row.clone());
            let (client, connection) =
                tokio::time::timeout(timeout, config.connect_raw(guarded, tokio_postgres::NoTls))
                    .await
                    .map_err(|_| Error::Connect(format!("{target}: timed out")))?
                    .map_err(failed)?;
            tokio::spawn(drive(connection));
            client
        }
        SslMode::Require | SslMode::VerifyFull => {
            let tls = tls_connector(target.ssl)
                .map_err(|e| Error::Connect(format!("{target}: TLS setup: {e}")))?;
            let (client, connection) = config.connect(tls).await.map_err(failed)?;
            tokio::spawn(drive(connection));
            client
        }
    };
    tracing::debug!(target = %target, "connected to PostgreSQL");
    Ok(Connection {
        client,
        target: target.clone(),
        statements: HashMap::new(),
        refused_row,
    })
}

/// A socket to a server: TCP, or Unix in a socket directory.
trait Wire: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Wire for T {}

/// A socket to `target`, as libpq would open it: a `host` starting with `/` is the directory of
/// the server's Unix socket.
async fn open_wire(target: &PgTarget, timeout: Duration) -> std::io::Result<Box<dyn Wire>> {
    let open = async {
        if target.host.starts_with('/') {
            let path = std::path::Path::new(&target.host).join(format!(".s.PGSQL.{}", target.port));
            Ok(Box::new(tokio::net::UnixStream::connect(path).await?) as Box<dyn Wire>)
        } else {
            let stream =
                tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Wire>)
        }
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))?
}

/// What a server sends, passed on as it comes, with its framing followed (a tag byte, a
/// 4-byte length counting itself, the body) so that a row (`D`, `DataRow`) announcing more
/// than `limit` bytes fails the connection from its header, before its body is read.
struct RowGuard<S> {
    inner: S,
    limit: u64,
    header: [u8; 5],
    /// Header bytes seen of the message that comes next.
    have: usize,
    /// Body bytes of the current message still to pass.
    skip: u64,
    /// Where the refused row's size is left for the query to report.
    refused: Arc<AtomicU64>,
}

impl<S> RowGuard<S> {
    fn new(inner: S, limit: u64, refused: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            limit,
            header: [0; 5],
            have: 0,
            skip: 0,
            refused,
        }
    }

    /// Follows the framing over `bytes`; the size of a row past the limit when one starts.
    fn follow(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.header.len() - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.header.len() {
                self.have = 0;
                let [tag, length @ ..] = self.header;
                let body = u64::from(u32::from_be_bytes(length)).saturating_sub(4);
                if tag == b'D' && body > self.limit {
                    return Some(body);
                }
                self.skip = body;
            }
        }
        None
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RowGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match this.follow(&buf.filled()[before..]) {
            None => Poll::Ready(Ok(())),
            Some(bytes) => {
                this.refused.store(bytes, Ordering::Relaxed);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a row of {bytes} bytes is larger than the result's bound"),
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RowGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "PostgreSQL connection closed");
    }
}

fn tls_connector(mode: SslMode) -> Result<tokio_postgres_rustls::MakeRustlsConnect, rustls::Error> {
    super::http::install_crypto_provider();
    let config = match mode {
        SslMode::VerifyFull => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier()?
        }
        _ => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer::new()))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Why a statement gave no rows.
enum Failure {
    Postgres(tokio_postgres::Error),
    /// The result passed its byte bound; how it did (`after 7 rows`).
    TooLarge(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Postgres(error)
    }
}

async fn run_statement(
    connection: &mut Connection,
    statement: &str,
    row_limit: usize,
    result_limit: usize,
) -> Result<Rows, Failure> {
    let prepared = match connection.statements.get(statement) {
        Some(prepared) => prepared.clone(),
        None => {
            let prepared = connection.client.prepare(statement).await?;
            if connection.statements.len() >= MAX_STATEMENTS {
                connection.statements.clear();
            }
            connection
                .statements
                .insert(statement.to_owned(), prepared.clone());
            prepared
        }
    };
    let columns: Vec<String> = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let stream = connection
        .client
        .query_raw(
            &prepared,
            std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
        )
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut truncated = false;
    let mut bytes = columns.iter().map(String::len).sum::<usize>();
    while let Some(row) = stream.next().await {
        let row = row?;
        if rows.len() == row_limit {
            truncated = true;
            break;
        }
        bytes = bytes.saturating_add(row_size(&row));
        if bytes > result_limit {
            return Err(Failure::TooLarge(format!("after {} rows", rows.len() + 1)));
        }
        rows.push(decode_row(&row));
    }
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

/// What a row counts toward its result's bound: its values' raw bytes, read without decoding
/// them, and [`VALUE_OVERHEAD`] for each.
fn row_size(row: &tokio_postgres::Row) -> usize {
    (0..row.len())
        .map(|index| {
            let raw = row.try_get::<_, RawSize>(index).map_or(0, |size| size.0);
            raw.saturating_add(VALUE_OVERHEAD)
        })
        .fold(0, usize::saturating_add)
}

/// The length of a value as it came over the wire, of any type (0 for NULL).
struct RawSize(usize);

impl<'a> FromSql<'a> for RawSize {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.len()))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(0))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn decode_row(row: &tokio_postgres::Row) -> Vec<Value> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(index, column)| decode(row, index, column.type_()))
        .collect()
}

fn decode(row: &tokio_postgres::Row, index: usize, ty: &Type) -> Value {
    fn get<'a, T: FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        index: usize,
    ) -> Result<Option<T>, String> {
        row.try_get::<_, Option<T>>(index)
            .map_err(|e| e.to_string())
    }
    let decoded = match *ty {
        Type::BOOL => get::<bool>(row, index).map(|v| v.map(Value::Boolean)),
        Type::INT2 => get::<i16>(row, index).map(|v| v.map(|i| Value::Int(i.into()))),
        Type::INT4 => get::<i32>(row, index).map(|v| v.map(|i| Value::Int(i.into()))),
        Type::INT8 => get::<i64>(row, index).map(|v| v.map(Value::Int)),
        Type::OID => get::<u32>(row, index).map(|v| v.map(|i| Value::Int(i.into()))),
        Type::FLOAT4 => get::<f32>(row, index).map(|v| v.map(|f| Value::Float(f.into()))),
        Type::FLOAT8 => get::<f64>(row, index).map(|v| v.map(Value::Float)),
        Type::NUMERIC => get::<NumericText>(row, index).map(|v| v.map(|n| Value::Numeric(n.0))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get::<String>(row, index).map(|v| v.map(Value::Text))
        }
        _ => return Value::Unsupported(ty.name().to_owned()),
    };
    match decoded {
        Ok(Some(value)) => value,
        Ok(None) => Value::Null,
        Err(error) => Value::Unsupported(format!("{} ({error})", ty.name())),
    }
}

/// A NUMERIC in its exact decimal text, decoded from the binary format: a header of four
/// 16-bit fields (digit count, weight of the first digit in powers of 10000, sign, display
/// scale) followed by base-10000 digits.
struct NumericText(String);

impl<'a> FromSql<'a> for NumericText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        numeric_text(raw)
            .map(Self)
            .ok_or_else(|| "malformed NUMERIC value".into())
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

fn numeric_text(raw: &[u8]) -> Option<String> {
    use std::fmt::Write;
    let field = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes([*raw.get(2 * i)?, *raw.get(2 * i + 1)?]))
    };
    let ndigits = usize::try_from(field(0)?).ok()?;
    let weight = i32::from(field(1)?);
    let sign = field(2)? as u16;
    let scale = usize::try_from(field(3)?).ok()?;
    let digits: Vec<i16> = (0..ndigits).map(|i| field(4 + i)).collect::<Option<_>>()?;
    let digit = |position: i32| -> i16 {
        usize::try_from(position)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let mut text = match sign {
        0x0000 => String::new(),
        0x4000 => "-".to_owned(),
        0xC000 => return Some("NaN".to_owned()),
        0xD000 => return Some("Infinity".to_owned()),
        0xF000 => return Some("-Infinity".to_owned()),
        _ => return None,
    };
    if weight < 0 {
        text.push('0');
    } else {
        for position in 0..=weight {
            if position == 0 {
                write!(text, "{}", digit(position)).ok()?;
            } else {
                write!(text, "{:04}", digit(position)).ok()?;
            }
        }
    }
    if scale > 0 {
        let mut fraction = String::with_capacity(scale + 4);
        let mut position = weight + 1;
        while fraction.len() < scale {
            write!(fraction, "{:04}", digit(position)).ok()?;
            position += 1;
        }
        fraction.truncate(scale);
        text.push('.');
        text.push_str(&fraction);
    }
    Some(text)
}

fn describe(target: &PgTarget, error: &tokio_postgres::Error) -> Error {
    match error.as_db_error() {
        Some(db) => Error::Query(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
        None => Error::Connect(format!("{target}: {}", chain(error))),
    }
}

/// An error and its causes as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `ssl: require`: encrypt, but accept any server certificate, as libpq's `require` does.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl AnyServer {
    fn new() -> Self {
        Self(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, scale: i16, digits: &[i16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for field in [ndigits, weight, sign as i16, scale] {
            raw.extend_from_slice(&field.to_be_bytes());
        }
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn the_row_guard_follows_messages_across_reads_and_refuses_a_long_row_from_its_header() {
        let message = |tag: u8, body: usize| {
            let mut m = vec![tag];
            m.extend_from_slice(&u32::try_from(body + 4).unwrap().to_be_bytes());
            m.extend(std::iter::repeat_n(b'x', body));
            m
        };
        let mut wire = [message(b'T', 30), message(b'D', 100), message(b'D', 100)].concat();
        let mut guard = RowGuard::new((), 100, Arc::default());
        // Every split of a stream of allowed messages passes, one byte at a time too.
        for chunk in wire
            .chunks(1)
            .chain(wire.chunks(7))
            .chain(wire.chunks(1000))
        {
            assert_eq!(guard.follow(chunk), None);
        }
        assert_eq!((guard.have, guard.skip), (0, 0), "between messages");
        // A row one byte too long is refused from its header alone.
        wire = message(b'D', 101);
        assert_eq!(guard.follow(&wire[..3]), None);
        assert_eq!(guard.follow(&wire[3..5]), Some(101));
    }

    #[test]
    fn numeric_text_decodes_the_binary_format() {
        assert_eq!(
            numeric_text(&numeric(2, 0, 0, 2, &[12, 3400])).unwrap(),
            "12.34"
        );
        assert_eq!(
            numeric_text(&numeric(2, 1, 0, 0, &[1, 2345])).unwrap(),
            "12345"
        );
        assert_eq!(
            numeric_text(&numeric(1, 2, 0x4000, 0, &[7])).unwrap(),
            "-700000000"
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0, 3, &[500])).unwrap(),
            "0.050"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert_eq!(numeric_text(&[0, 1]), None, "truncated header");
    }
}
