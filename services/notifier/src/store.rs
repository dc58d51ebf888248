//! The durable mail queue in SQLite or PostgreSQL (sqlx `Any` driver, runtime queries with
//! `$n` placeholders in order, times as unix milliseconds). Replicas share it safely: rows are
//! claimed with a lease by conditional updates, and finished only by the lease holder, whose
//! claim stays on the finished row (which replica sent what). [`Db`] is the notifier's
//! database, named as in the other services.

use kagi_runtime::db::Backend;
use sqlx::Row;
use sqlx::any::AnyRow;
use tracing::instrument;
use zeroize::Zeroizing;

use crate::domain::{DeliveryState, Locale, MessageKind, NewMessage};

/// The columns of [`DeliveryRecord`], spliced into queries at compile time.
macro_rules! columns {
    () => {
        "id, message_id, kind, recipient, account_id, locale, state, attempts, last_reply, \
         created_at, not_after, next_attempt_at, sent_at"
    };
}

/// A queued or handled message, as `GetDelivery` shows it (never the payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: String,
    pub message_id: String,
    pub kind: MessageKind,
    pub recipient: String,
    pub account_id: String,
    pub locale: Locale,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_reply: Option<String>,
    pub created_at: i64,
    pub not_after: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
}

/// A message this replica holds the lease on, with its payload (JSON, may hold the code).
pub struct ClaimedDelivery {
    pub record: DeliveryRecord,
    pub payload: Option<Zeroizing<String>>,
    pub lease_owner: String,
}

impl std::fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// What happened to an enqueue request.
#[derive(Debug)]
pub enum Enqueued {
    /// Queued now.
    Created(String),
    /// The message ID was seen before; nothing new was queued.
    Existing(DeliveryRecord),
    /// The recipient reached the rate limit; nothing was queued.
    RateLimited,
}

/// How a lease holder ends an attempt.
#[derive(Debug, Clone)]
pub enum Finish {
    Sent { reply: String },
    Failed { reply: String, attempted: bool },
    Retry { reply: String, next_attempt_at: i64 },
}

kagi_runtime::service_database! {
    /// The queue's database: deliveries and their per-recipient counts.
    pub struct Db(NotifierSchema, embedded = "sqlite://data/notifier.db?mode=rwc", postgres_schema = "notifier");
}

impl Db {
    /// Queues `message` under `id` unless its message ID is known (idempotent replay) or the
    /// recipient already had `limit` messages of this kind since `window_start` (both ms).
    /// One insert does it all (the limit is counted inside it); only when nothing was inserted
    /// is the message ID looked up, to tell a replay from a refusal.
    ///
    /// # Errors
    /// Database failures.
    #[instrument(skip_all, fields(message_id = %message.message_id, delivery_id = %id))]
    pub async fn enqueue(
        &self,
        id: &str,
        message: &NewMessage,
        payload: &str,
        now: i64,
        rate_limit: Option<(i64, i64)>,
    ) -> Result<Enqueued, sqlx::Error> {
        let rate_key = message.rate_key();
        // On SQLite this process's writers (handlers and the worker) take turns here rather
        // than sleeping in the busy handler; held until the insert is done.
        let turn = self.write_turn().await;
        let mut conn = self.pool().acquire().await?;
        // Under READ COMMITTED two concurrent inserts could both count below the limit, so on
        // PostgreSQL they are serialized per recipient. SQLite runs one writing statement at
        // a time, and the count happens inside the insert.
        let lock = rate_limit.is_some() && self.backend() == Backend::Postgres;
        // Without an allowance there is nothing to count: counting every mail the recipient
        // was ever sent (the window then being all time) made each insert slower than the
        // last, one recipient's row count per mail.
        let sql = if rate_limit.is_some() {
            "INSERT INTO deliveries (id, message_id, kind, recipient, rate_key, account_id, locale, payload, \
                                     state, attempts, created_at, not_after, next_attempt_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11 \
             WHERE (SELECT COUNT(*) FROM deliveries WHERE rate_key = $12 AND kind = $13 AND created_at > $14) < $15 \
             ON CONFLICT (message_id) DO NOTHING"
        } else {
            "INSERT INTO deliveries (id, message_id, kind, recipient, rate_key, account_id, locale, payload, \
                                     state, attempts, created_at, not_after, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11) \
             ON CONFLICT (message_id) DO NOTHING"
        };
        let insert = sqlx::query(sql)
            .bind(id)
            .bind(&message.message_id)
            .bind(message.kind.as_str())
            .bind(message.recipient.to_string())
            .bind(&rate_key)
            .bind(&message.account_id)
            .bind(message.locale.as_str())
            .bind(payload)
            .bind(now)
            .bind(message.not_after.timestamp_millis())
            .bind(now);
        let insert = match rate_limit {
            Some((window_start, limit)) => insert
                .bind(&rate_key)
                .bind(message.kind.as_str())
                .bind(window_start)
                .bind(limit),
            None => insert,
        };
        let inserted = if lock {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(&rate_key)
                .execute(&mut *tx)
                .await?;
            let inserted = insert.execute(&mut *tx).await?;
            tx.commit().await?;
            inserted
        } else {
            insert.execute(&mut *conn).await?
        };
        drop(conn);
        drop(turn);
        if inserted.rows_affected() == 1 {
            return Ok(Enqueued::Created(id.to_owned()));
        }
        // Nothing inserted: the message ID is known (a replay), or the limit refused it.
        match self.get_by_message_id(&message.message_id).await? {
            Some(existing) => Ok(Enqueued::Existing(existing)),
            None => Ok(Enqueued::RateLimited),
        }
    }

    /// # Errors
    /// Database failures.
    #[instrument(skip_all, fields(delivery_id = %id))]
    pub async fn get(&self, id: &str) -> Result<Option<DeliveryRecord>, sqlx::Error> {
        let sql = concat!("SELECT ", columns!(), " FROM deliveries WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn get_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<DeliveryRecord>, sqlx::Error> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM deliveries WHERE message_id = $1"
        );
        let row = sqlx::query(sql)
            .bind(message_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// The account's newest `limit` messages, newest first (the help desk's list). The limit
    /// is cast so SQLite keeps the statement prepared (a bare `LIMIT $n` is planned again
    /// on every bind).
    ///
    /// # Errors
    /// Database failures.
    #[instrument(skip_all)]
    pub async fn recent_for_account(
        &self,
        account_id: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM deliveries WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT CAST($2 AS BIGINT)"
        );
        let rows = sqlx::query(sql)
            .bind(account_id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record).collect()
    }

    /// How many messages are queued, and when the oldest was.
    ///
    /// # Errors
    /// Database failures.
    pub async fn queue_summary(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE state = 'queued'")
            .fetch_one(self.pool())
            .await
    }

    /// Takes the lease on up to `limit` due messages whose lease is free or lapsed, as
    /// `owner` (unique per claim) until `lease_until`, and returns them with their payloads.
    ///
    /// # Errors
    /// Database failures.
    #[instrument(skip_all, fields(limit))]
    pub async fn claim_due(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
        // The outer conditions are checked again on each row as it is updated, so of two
        // replicas racing for a row only one sees it free. The limit is cast so SQLite keeps
        // the statement prepared between polls (a bare `LIMIT $n` is planned on every bind).
        let turn = self.write_turn().await;
        let claimed = sqlx::query(
            "UPDATE deliveries SET lease_owner = $1, lease_until = $2 \
             WHERE id IN (SELECT id FROM deliveries WHERE state = 'queued' AND next_attempt_at <= $3 \
                          AND (lease_until IS NULL OR lease_until < $4) ORDER BY next_attempt_at LIMIT CAST($5 AS BIGINT)) \
               AND state = 'queued' AND (lease_until IS NULL OR lease_until < $6)",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(now)
        .bind(limit)
        .bind(now)
        .execute(self.pool())
        .await?;
        drop(turn);
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        let sql = concat!(
            "SELECT ",
            columns!(),
            ", payload FROM deliveries WHERE lease_owner = $1 AND state = 'queued'"
        );
        let rows = sqlx::query(sql).bind(owner).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    record: record(row)?,
                    payload: row
                        .try_get::<Option<String>, _>("payload")?
                        .map(Zeroizing::new),
                    lease_owner: owner.to_owned(),
                })
            })
            .collect()
    }

    /// Records the end of an attempt, if `owner` still holds the lease. A sent or failed
    /// message loses its payload and keeps `owner` as the claim that finished it (a retried
    /// one is released for any replica). Returns whether the row was updated.
    ///
    /// # Errors
    /// Database failures.
    #[instrument(skip_all, fields(delivery_id = %id))]
    pub async fn finish(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        finish: &Finish,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.write_turn().await;
        let done = match finish {
            Finish::Sent { reply } => self.close_row(id, owner, DeliveryState::Sent, reply, Some(now), now, 1).await?,
            Finish::Failed { reply, attempted } => {
                self.close_row(id, owner, DeliveryState::Failed, reply, None, now, i64::from(*attempted)).await?
            }
            Finish::Retry { reply, next_attempt_at } => sqlx::query(
                "UPDATE deliveries SET attempts = attempts + 1, last_reply = $1, next_attempt_at = $2, \
                 lease_owner = NULL, lease_until = NULL WHERE id = $3 AND lease_owner = $4 AND state = 'queued'",
            )
            .bind(reply)
            .bind(*next_attempt_at)
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await?
            .rows_affected(),
        };
        Ok(done == 1)
    }

    #[allow(clippy::too_many_arguments)]
    async fn close_row(
        &self,
        id: &str,
        owner: &str,
        state: DeliveryState,
        reply: &str,
        sent_at: Option<i64>,
        now: i64,
        attempts: i64,
    ) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = attempts + $2, last_reply = $3, sent_at = $4, \
             finished_at = $5, payload = NULL, lease_until = NULL \
             WHERE id = $6 AND lease_owner = $7 AND state = 'queued'",
        )
        .bind(state.as_str())
        .bind(attempts)
        .bind(reply)
        .bind(sent_at)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Deletes sent and failed messages finished before `finished_before` (ms): the
    /// retention period has passed. Queued messages are never touched. Returns how many.
    ///
    /// # Errors
    /// Database failures.
    #[instrument(skip_all)]
    pub async fn purge_finished(&self, finished_before: i64) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM deliveries WHERE state <> 'queued' AND finished_at < $1")
                .bind(finished_before)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }

    /// The claim (`<replica>/<claim id>`) holding a queued message's lease, or the one that
    /// sent or failed it: which replica handled which message, for operators and tests.
    ///
    /// # Errors
    /// Database failures.
    pub async fn lease_owner(&self, id: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query("SELECT lease_owner FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| row.try_get::<Option<String>, _>("lease_owner"))
            .transpose()
            .map(Option::flatten)
    }

    /// Whether a message still stores its payload (tests check the wipe).
    ///
    /// # Errors
    /// Database failures.
    pub async fn has_payload(&self, id: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT payload FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<String>, _>("payload")?.is_some(),
            None => false,
        })
    }
}

fn record(row: &AnyRow) -> Result<DeliveryRecord, sqlx::Error> {
    let decode =
        |column: &str, what: &str| sqlx::Error::Decode(format!("bad {column} {what:?}").into());
    let kind: String = row.try_get("kind")?;
    let locale: String = row.try_get("locale")?;
    let state: String = row.try_get("state")?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        kind: MessageKind::parse(&kind).ok_or_else(|| decode("kind", &kind))?,
        recipient: row.try_get("recipient")?,
        account_id: row.try_get("account_id")?,
        locale: Locale::parse(&locale).map_err(|_| decode("locale", &locale))?,
        state: DeliveryState::parse(&state).ok_or_else(|| decode("state", &state))?,
        attempts: row.try_get("attempts")?,
        last_reply: row.try_get("last_reply")?,
        created_at: row.try_get("created_at")?,
        not_after: row.try_get("not_after")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}
