//! Views of a key (`GetCurrentKey`: menus 1 and 3), read and recorded in groups (group
//! commit).
//!
//! Every view of a key is read and audited in one command, so the trail names the key
//! that was shown and no key is shown unrecorded. Done one view at a time, each view is a
//! commit of its own, and on SQLite a trip to a connection's worker thread and back; under
//! load the commits, not the reading, bound how many keys can be shown. The views queued
//! while a group is being written are written together next: the same read and insert for
//! each, in one command and one commit, and each caller is answered when the commit that
//! holds its row has returned. Nothing about a single view changes (what is read, what is
//! recorded, when the key may be shown); only the commit is shared.

use std::sync::Arc;

use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Backend, CurrentKey, Db, NewAuditEvent};
use crate::domain::AccountId;

/// The most views one commit records: enough that the queue of a busy moment is written
/// in a commit or two, few enough that one command stays small (six parameters a view).
pub const MAX_VIEWS_PER_COMMIT: usize = 32;

/// How many of the `queued` views the next group takes: a power of two, at most
/// [`MAX_VIEWS_PER_COMMIT`]. Each group size is its own SQL text, prepared and cached on
/// every pooled connection that runs it (on SQLite a group of n is 2n + 2 statements):
/// six sizes keep that cache small where every size up to 32 made it hundreds of
/// megabytes. Views left over go in the next group at once.
fn group_size(queued: usize) -> usize {
    let queued = queued.clamp(1, MAX_VIEWS_PER_COMMIT);
    1 << queued.ilog2()
}

/// Views waiting for the next group; a caller waits here only while a group is written.
const QUEUE_DEPTH: usize = 1024;

/// One view: whose key, and the audit row to write with it (its `key_id` is taken from
/// the row read).
#[derive(Debug)]
pub struct ViewRequest {
    pub account: AccountId,
    pub at_ms: i64,
    pub caller: String,
    pub action: String,
    pub detail: String,
    pub trace_id: String,
}

impl ViewRequest {
    pub fn new(account: AccountId, event: &NewAuditEvent<'_>) -> Self {
        Self {
            account,
            at_ms: event.at_ms,
            caller: event.caller.to_owned(),
            action: event.action.to_owned(),
            detail: event.detail.clone(),
            trace_id: event.trace_id.clone(),
        }
    }
}

type Reply = oneshot::Sender<Result<Option<CurrentKey>, sqlx::Error>>;

/// The queue of views and the tasks that write them in groups.
#[derive(Debug, Clone)]
pub struct ViewQueue {
    sender: mpsc::Sender<(ViewRequest, Reply)>,
}

impl ViewQueue {
    /// Starts the writers: one on SQLite (it has one writer anyway), four on PostgreSQL, so
    /// a slow commit does not hold up the views behind it. They stop when the last clone of
    /// the queue is dropped, after writing what was queued.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(db: Db) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = match db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        for _ in 0..writers {
            tokio::spawn(write_groups(db.clone(), Arc::clone(&receiver)));
        }
        Self { sender }
    }

    /// Reads the account's live current key and records the view, in the next group's
    /// commit. `None`, and nothing recorded, without a live key. A caller that gives up
    /// after queueing still has its view recorded (an over-count, never a silent view).
    ///
    /// # Errors
    /// Database failures (every view of the group fails; none of it was committed).
    pub async fn view(&self, view: ViewRequest) -> Result<Option<CurrentKey>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((view, reply))
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

/// A writer: takes the views queued (a [`group_size`] of them), writes them in one
/// command, answers each, and starts again.
async fn write_groups(db: Db, receiver: Arc<Mutex<mpsc::Receiver<(ViewRequest, Reply)>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            group.push(first);
            let size = group_size(1 + receiver.len());
            while group.len() < size {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        let (views, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let count = views.len();
        match db.view_current_keys(views).await {
            Ok(keys) => {
                for (reply, key) in replies.into_iter().zip(keys) {
                    let _ = reply.send(Ok(key));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, views = count, "recording a group of key views failed");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(sqlx::Error::Protocol(message.clone())));
                }
            }
        }
    }
}

impl Db {
    /// The live current key of each view's account, and each view's audit row, in one
    /// command and one commit: on PostgreSQL one statement (the read feeds the insert), on
    /// SQLite one transaction sent as one command ([`Db::sqlite_one_shot`]). The answer has
    /// one entry per view, in order: `None`, and nothing recorded, without a live key.
    ///
    /// # Errors
    /// Database failures; nothing is then recorded.
    pub async fn view_current_keys(
        &self,
        views: Vec<ViewRequest>,
    ) -> Result<Vec<Option<CurrentKey>>, sqlx::Error> {
        let count = views.len();
        let sql = match self.backend() {
            Backend::Postgres => postgres_views_sql(count),
            Backend::Sqlite => sqlite_views_sql(count),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for view in views {
            query = query
                .bind(view.account.as_str().to_owned())
                .bind(view.at_ms)
                .bind(view.caller)
                .bind(view.action)
                .bind(view.detail)
                .bind(view.trace_id);
        }
        let rows = match self.backend() {
            Backend::Postgres => query.fetch_all(self.database.pool()).await?,
            Backend::Sqlite => self.sqlite_one_shot(query).await?,
        };
        let mut keys: Vec<Option<CurrentKey>> = (0..count).map(|_| None).collect();
        for row in rows {
            let (n, key) = numbered_key(&row)?;
            if let Some(slot) = keys.get_mut(n) {
                *slot = Some(key);
            }
        }
        Ok(keys)
    }
}

/// A row of a group's answer: which view (`n`, its place in the group) and its key.
fn numbered_key(row: &AnyRow) -> Result<(usize, CurrentKey), sqlx::Error> {
    let n: i64 = row.try_get("n")?;
    let n = usize::try_from(n).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok((n, sqlx::FromRow::from_row(row)?))
}

/// The `$` numbers of view `n`'s six parameters: account, at, caller, action, detail,
/// trace ID.
fn params(n: usize) -> [usize; 6] {
    let first = n * 6 + 1;
    [first, first + 1, first + 2, first + 3, first + 4, first + 5]
}

fn postgres_views_sql(count: usize) -> String {
    let values: Vec<String> = (0..count)
        .map(|n| {
            let [account, at, caller, action, detail, trace] = params(n);
            format!(
                "({n}::bigint, ${account}, ${at}::bigint, ${caller}, ${action}, ${detail}, ${trace})"
            )
        })
        .collect();
    format!(
        "WITH asked (n, account_id, at, caller, action, detail, trace_id) AS (VALUES {}), \
         viewed AS (SELECT asked.n, {} FROM asked JOIN accounts a \
           ON a.account_id = asked.account_id AND a.revoked_at IS NULL), \
         logged AS (INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
           SELECT asked.at, asked.caller, asked.action, viewed.account_id, viewed.current_key_id, \
             asked.detail, asked.trace_id FROM asked JOIN viewed ON viewed.n = asked.n ORDER BY asked.n) \
         SELECT * FROM viewed",
        values.join(", "),
        prefixed_key_columns("a"),
    )
}

fn sqlite_views_sql(count: usize) -> String {
    let mut sql = String::from("BEGIN IMMEDIATE; ");
    for n in 0..count {
        let [account, at, caller, action, detail, trace] = params(n);
        sql.push_str(&format!(
            "INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
             SELECT ${at}, ${caller}, ${action}, account_id, current_key_id, ${detail}, ${trace} \
             FROM accounts WHERE account_id = ${account} AND revoked_at IS NULL; \
             SELECT {n} AS n, {} FROM accounts \
             WHERE account_id = ${account} AND revoked_at IS NULL AND changes() = 1; ",
            key_columns!(),
        ));
    }
    sql.push_str("COMMIT;");
    sql
}

/// [`key_columns!`] with each column taken from `table`.
fn prefixed_key_columns(table: &str) -> String {
    key_columns!()
        .split(", ")
        .map(|column| format!("{table}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_powers_of_two_up_to_the_most_a_commit_records() {
        let sizes: Vec<usize> = [0, 1, 2, 3, 7, 8, 31, 32, 33, 500]
            .into_iter()
            .map(group_size)
            .collect();
        assert_eq!(sizes, [1, 1, 2, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn each_view_has_six_parameters_of_its_own() {
        assert_eq!(params(0), [1, 2, 3, 4, 5, 6]);
        assert_eq!(params(2), [13, 14, 15, 16, 17, 18]);
        let sql = sqlite_views_sql(3);
        assert!(sql.contains("$18") && !sql.contains("$19"), "{sql}");
        assert!(sql.starts_with("BEGIN IMMEDIATE;") && sql.ends_with("COMMIT;"));
        let sql = postgres_views_sql(3);
        assert!(
            sql.contains("(2::bigint, $13, $14::bigint") && !sql.contains("$19"),
            "{sql}"
        );
    }
}
