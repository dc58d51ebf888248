//! The pool as every store sees it: sqlx's pool behind a wrapper that counts the tasks
//! waiting for a connection and times each wait, because sqlx 0.9 keeps its waiters
//! private (its `Pool` tells only `size()` and `num_idle()`).
//!
//! [`Database::pool`](super::Database::pool) hands out a [`MeteredPool`], which is an
//! [`Executor`] like `&AnyPool` (`.execute(db.pool())`, `.fetch_all(db.pool())`) and has the
//! pool's `acquire()` and `begin()`. The stores did not change: every statement they run on
//! the pool, every transaction and every connection they take passes through
//! [`MeteredPool::acquire`]. Only migrations and the pool statistics use the bare pool
//! ([`MeteredPool::unmetered`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::pool::{MaybePoolConnection, PoolConnection};
use sqlx::{Any, AnyPool, Either, Execute, Executor, SqlStr, Transaction};
use tokio_stream::{Stream, StreamExt as _};

type BoxFuture<'e, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'e>>;
type BoxStream<'e, T> = Pin<Box<dyn Stream<Item = Result<T, sqlx::Error>> + Send + 'e>>;

/// What the waits for a pool's connections look like, shared by every clone of the pool
/// and registered by [`crate::Metrics::database`].
#[derive(Debug, Clone)]
pub struct PoolMeter {
    /// Tasks inside `acquire()` right now: waiting for an idle connection, a new one being
    /// opened, or one to be released when all `max_connections` are lent out.
    pub waiting: Gauge,
    /// How long each `acquire()` took, successful or not.
    pub acquire_seconds: Histogram,
    /// Acquisitions that gave up after the pool's `acquire_timeout`.
    pub timeouts: Counter,
}

impl Default for PoolMeter {
    fn default() -> Self {
        Self {
            waiting: Gauge::default(),
            // 0.1 ms (an idle connection is handed over in microseconds) to ~26 s (beyond
            // the 10 s acquire timeout), a factor of 4 apart: ten buckets.
            acquire_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            timeouts: Counter::default(),
        }
    }
}

/// Counts a task in `waiting` for as long as it lives, so a caller that gives up
/// mid-acquire (a cancelled RPC) is not left counted.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// sqlx's pool, with every acquisition measured into its [`PoolMeter`].
#[derive(Debug, Clone)]
pub struct MeteredPool {
    pool: AnyPool,
    meter: Arc<PoolMeter>,
}

impl MeteredPool {
    pub(crate) fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            meter: Arc::default(),
        }
    }

    /// A connection from the pool, counted while it is awaited.
    ///
    /// # Errors
    /// The database is unreachable, or no connection came free within the acquire timeout.
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let start = Instant::now();
        let waiting = Waiting::new(&self.meter.waiting);
        let acquired = self.pool.acquire().await;
        drop(waiting);
        self.meter
            .acquire_seconds
            .observe(start.elapsed().as_secs_f64());
        if matches!(acquired, Err(sqlx::Error::PoolTimedOut)) {
            self.meter.timeouts.inc();
        }
        acquired
    }

    /// A transaction on a connection from [`MeteredPool::acquire`].
    ///
    /// # Errors
    /// As [`MeteredPool::acquire`], or `BEGIN` failed.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let conn = self.acquire().await?;
        Transaction::begin(MaybePoolConnection::PoolConnection(conn), None).await
    }

    /// The waits measured so far.
    pub fn meter(&self) -> &PoolMeter {
        &self.meter
    }

    /// The bare sqlx pool, for its statistics and for migrations: what runs on it is not
    /// measured, so queries belong on the [`MeteredPool`] itself.
    pub fn unmetered(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The same executor as `&AnyPool`, each statement on a connection from
/// [`MeteredPool::acquire`]. `fetch`/`fetch_many` streams are the one difference: their rows
/// are read whole before the first is yielded (an owned connection cannot lend itself to a
/// stream without a self-referential type); no query of this code base streams, and one that
/// must should take a connection with `acquire()` and stream on it.
impl<'p> Executor<'p> for &'_ MeteredPool {
    type Database = Any;

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, AnyQueryResult>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn).execute(query).await
        })
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Vec<AnyRow>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn).fetch_all(query).await
        })
    }

    fn fetch_one<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, AnyRow>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn).fetch_one(query).await
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Option<AnyRow>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn).fetch_optional(query).await
        })
    }

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Either<AnyQueryResult, AnyRow>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pool = self.clone();
        Box::pin(ReadWhole::new(Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn)
                .fetch_many(query)
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .await
        })))
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, AnyStatement>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn).prepare_with(sql, parameters).await
        })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, sqlx::Describe<Any>>
    where
        'p: 'e,
    {
        let pool = self.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await?;
            (&mut *conn).describe(sql).await
        })
    }
}

/// A stream of the items one future reads whole: see the `fetch_many` note above.
struct ReadWhole<'e, T> {
    read: Option<BoxFuture<'e, Vec<T>>>,
    items: std::vec::IntoIter<T>,
}

impl<'e, T> ReadWhole<'e, T> {
    fn new(read: BoxFuture<'e, Vec<T>>) -> Self {
        Self {
            read: Some(read),
            items: Vec::new().into_iter(),
        }
    }
}

impl<T: Unpin> Stream for ReadWhole<'_, T> {
    type Item = Result<T, sqlx::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(read) = self.read.as_mut() {
            match read.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.read = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(items)) => {
                    self.read = None;
                    self.items = items.into_iter();
                }
            }
        }
        Poll::Ready(self.items.next().map(Ok))
    }
}
