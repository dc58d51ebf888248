//! The WAL keeper. Under unbroken load a SQLite database never has the moment without
//! readers on old snapshots that its automatic (PASSIVE) checkpoints need to restart the
//! write-ahead log ("checkpoint starvation"): the log grows without bound (past 1 GB in the
//! million-account benchmark), every read searches a larger WAL index, and the disk fills.
//! The keeper runs a truncating checkpoint now and then, which *waits* for the readers of
//! the moment to finish instead of needing a moment with none; readers that start meanwhile
//! read the checkpointed file and do not hold it up.

use std::time::Duration;

use super::{Backend, Database};
use crate::shutdown::BackgroundTasks;

/// How often the keeper checkpoints a SQLite database. Each pass pauses this process's
/// writers while it copies the log into the file, so the period trades how often they pause
/// against how long, and bounds the log: at the heaviest load measured (3,400 logins a
/// second on a million accounts, the log growing some 60 MB a second) to a few hundred
/// megabytes instead of without limit; at a campus's usual load to almost nothing.
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// What one keeper pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalCheckpoint {
    /// The log, `frames` pages when the pass began, was copied into the file and truncated
    /// to nothing.
    Truncated { frames: i64 },
    /// A reader, or another process's writer, held on past the busy timeout: the log was
    /// copied as far as it could be but not truncated. The next pass tries again.
    HeldOpen { frames: i64 },
    /// Another connection was checkpointing (SQLite's automatic checkpoint after a commit
    /// that passed 1,000 pages, or another process's), and SQLite lets one run at a time:
    /// that one copies the log meanwhile, and the next pass tries again. Routine under
    /// heavy writes, not a fault.
    OtherCheckpointRunning,
}

impl<S: 'static> Database<S> {
    /// Registers the WAL keeper on `background`: a pass at once and then every
    /// [`WAL_CHECKPOINT_EVERY`] on SQLite; nothing on PostgreSQL, which keeps its own log.
    pub fn keep_wal(&self, background: &mut BackgroundTasks) {
        self.keep_wal_every(background, WAL_CHECKPOINT_EVERY);
    }

    /// [`Self::keep_wal`] with another period (tests use a short one).
    pub fn keep_wal_every(&self, background: &mut BackgroundTasks, period: Duration) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let db = self.clone();
        background.every("wal-keeper", period, move || {
            let db = db.clone();
            async move {
                match db.checkpoint_wal().await {
                    Ok(Some(WalCheckpoint::Truncated { frames })) => {
                        tracing::debug!(frames, "WAL checkpointed and truncated");
                    }
                    Ok(Some(WalCheckpoint::HeldOpen { frames })) => tracing::warn!(
                        frames,
                        "WAL checkpoint blocked past the busy timeout by a long reader or another \
                         process's writer; the log was not truncated"
                    ),
                    Ok(Some(WalCheckpoint::OtherCheckpointRunning)) => tracing::debug!(
                        "another connection was checkpointing the WAL; the next pass truncates it"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        });
    }

    /// One keeper pass: takes this process's write turn, so its writers queue on the turn
    /// rather than in SQLite's busy handler while the checkpoint holds SQLite's write lock,
    /// then checkpoints and truncates the log. A transaction holding the turn finishes
    /// first; the pass never holds a connection while it waits. `None` on PostgreSQL.
    ///
    /// # Errors
    /// The database is unreachable or the checkpoint fails.
    pub async fn checkpoint_wal(&self) -> Result<Option<WalCheckpoint>, sqlx::Error> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        // A successful TRUNCATE reports an empty log, so the passive checkpoint before it
        // tells the log's size (and copies what it can without waiting, the TRUNCATE's
        // first step anyway). A checkpoint that could not start at all (another holds
        // SQLite's checkpoint lock, which it never waits for) answers busy with -1 pages.
        let (busy, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await?;
        if busy != 0 && frames < 0 {
            return Ok(Some(WalCheckpoint::OtherCheckpointRunning));
        }
        let (blocked, log, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Some(match (blocked, log) {
            (0, _) => WalCheckpoint::Truncated { frames },
            (_, log) if log < 0 => WalCheckpoint::OtherCheckpointRunning,
            _ => WalCheckpoint::HeldOpen { frames },
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sqlx::migrate::Migrator;
    use sqlx::{Any, Executor, Transaction};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::db::{Schema, WriteTx};
    use crate::shutdown::Stopping;

    struct Scratch;
    impl Schema for Scratch {
        const EMBEDDED_URL: &'static str = "sqlite://data/scratch.db?mode=rwc";
        const POSTGRES_SCHEMA: &'static str = "scratch";
        fn migrator(_: Backend) -> &'static Migrator {
            static NONE: Migrator = Migrator::DEFAULT;
            &NONE
        }
    }

    const MB: u64 = 1024 * 1024;
    /// Rows of 1,000 random bytes, 100 a transaction: about 100 KB of log each.
    const ROWS_PER_BATCH: i64 = 100;
    /// 16 MB or so: four times the log at which SQLite's automatic checkpoint runs.
    const BATCHES: usize = 160;

    fn wal_size(db_file: &Path) -> u64 {
        let mut wal = db_file.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len())
    }

    /// A scratch SQLite database with an empty `rows` table, in a folder of its own (kept
    /// alive by the returned guard); also the path of its file, whose log the tests watch.
    async fn scratch_rows(max_connections: u32) -> (tempfile::TempDir, PathBuf, Database<Scratch>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scratch.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = Database::<Scratch>::connect(&url, max_connections)
            .await
            .unwrap();
        db.pool()
            .execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
            .await
            .unwrap();
        (dir, file, db)
    }

    async fn snapshot(db: &Database<Scratch>) -> Transaction<'static, Any> {
        let mut tx = db.pool().begin().await.unwrap();
        let _: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM rows")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx
    }

    /// Readers that always overlap, as a busy service's do: each takes its snapshot before
    /// the one before it lets go, so the log never has a moment without a reader.
    fn overlapping_readers(db: Database<Scratch>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut held = snapshot(&db).await;
            while !stop.load(Ordering::SeqCst) {
                let next = snapshot(&db).await;
                held.commit().await.unwrap();
                held = next;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            held.commit().await.unwrap();
        })
    }

    /// Writes [`BATCHES`] transactions the way the stores do (taking the write turn); returns
    /// the rows written and the largest log seen after a commit.
    async fn write_batches(db: &Database<Scratch>, db_file: &Path) -> (i64, u64) {
        let mut largest = 0;
        for _ in 0..BATCHES {
            let WriteTx { mut tx, turn } = db.begin_write().await.unwrap();
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
                 INSERT INTO rows (payload) SELECT randomblob(1000) FROM n",
            )
            .bind(ROWS_PER_BATCH)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            drop(turn);
            largest = largest.max(wal_size(db_file));
        }
        (ROWS_PER_BATCH * i64::try_from(BATCHES).unwrap(), largest)
    }

    #[tokio::test]
    async fn the_keeper_truncates_the_log_that_overlapping_readers_let_grow_and_no_row_is_lost() {
        let (_dir, file, db) = scratch_rows(6).await;
        let stop_reading = Arc::new(AtomicBool::new(false));
        let readers = overlapping_readers(db.clone(), Arc::clone(&stop_reading));

        // Without the keeper the automatic checkpoints never restart the log: it holds
        // everything written.
        let (mut written, _) = write_batches(&db, &file).await;
        let grown = wal_size(&file);
        assert!(grown > 12 * MB, "the log grew to only {grown} bytes");

        // The keeper's first pass truncates it although the readers never pause.
        let (stop_keeping, stopping) = Stopping::manual();
        let mut background = BackgroundTasks::new(stopping);
        db.keep_wal_every(&mut background, Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(60), async {
            while wal_size(&file) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the keeper never truncated the log");

        // Writing as much again with the keeper running, the log stays a fraction of that.
        let (more, largest) = write_batches(&db, &file).await;
        written += more;
        assert!(
            largest < grown / 2,
            "the log reached {largest} bytes with the keeper, {grown} without"
        );

        // One pass with the readers still going empties it, and every row is there.
        let pass = db.checkpoint_wal().await.unwrap().unwrap();
        assert!(matches!(pass, WalCheckpoint::Truncated { .. }), "{pass:?}");
        assert_eq!(wal_size(&file), 0);
        stop_reading.store(true, Ordering::SeqCst);
        readers.await.unwrap();
        stop_keeping.stop();
        background.join(Duration::from_secs(30)).await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rows")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(rows, written);
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(check, "ok");
        db.close().await;
    }

    #[tokio::test]
    async fn a_pass_waits_for_the_transaction_holding_the_write_turn_then_runs() {
        let (_dir, file, db) = scratch_rows(2).await;
        let WriteTx { mut tx, turn } = db.begin_write().await.unwrap();
        sqlx::query("INSERT INTO rows (payload) VALUES (randomblob(1000))")
            .execute(&mut *tx)
            .await
            .unwrap();

        let pass = tokio::spawn({
            let db = db.clone();
            async move { db.checkpoint_wal().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pass.is_finished(), "the pass ran inside a transaction");
        tx.commit().await.unwrap();
        drop(turn);

        let pass = pass.await.unwrap().unwrap().unwrap();
        assert!(
            matches!(pass, WalCheckpoint::Truncated { frames } if frames > 0),
            "{pass:?}"
        );
        assert_eq!(wal_size(&file), 0);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rows")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
        db.close().await;
    }

    /// SQLite runs one checkpoint at a time and never waits for its checkpoint lock: a pass
    /// that meets another connection's checkpoint says so (the routine case under heavy
    /// writes, logged at debug) instead of reporting readers holding the log open (warned).
    #[tokio::test]
    async fn a_pass_that_meets_another_checkpoint_says_so_and_the_next_truncates() {
        let (_dir, file, db) = scratch_rows(4).await;
        // A reader on an older snapshot than the log's end: a truncating checkpoint
        // elsewhere then waits for it, holding SQLite's checkpoint lock.
        let reader = snapshot(&db).await;
        db.pool()
            .execute("INSERT INTO rows (payload) VALUES (randomblob(1000))")
            .await
            .unwrap();
        let other = tokio::spawn({
            let db = db.clone();
            async move {
                let mut conn = db.pool().acquire().await.unwrap();
                loop {
                    let (blocked, log, _): (i64, i64, i64) =
                        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                            .fetch_one(&mut *conn)
                            .await
                            .unwrap();
                    // -1: it met the probe below and never started; it tries again.
                    if log >= 0 {
                        break blocked;
                    }
                }
            }
        });
        // Until the other holds the lock, a passive checkpoint (which never waits) runs.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let (busy, frames, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(db.pool())
                        .await
                        .unwrap();
                if busy != 0 && frames < 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the other checkpoint never took the lock");
        assert!(
            !other.is_finished(),
            "the other checkpoint did not wait for the reader"
        );

        let pass = db.checkpoint_wal().await.unwrap().unwrap();
        assert_eq!(pass, WalCheckpoint::OtherCheckpointRunning);

        reader.commit().await.unwrap();
        assert_eq!(other.await.unwrap(), 0, "the other checkpoint was blocked");
        db.pool()
            .execute("INSERT INTO rows (payload) VALUES (randomblob(1000))")
            .await
            .unwrap();
        let pass = db.checkpoint_wal().await.unwrap().unwrap();
        assert!(
            matches!(pass, WalCheckpoint::Truncated { frames } if frames > 0),
            "{pass:?}"
        );
        assert_eq!(wal_size(&file), 0);
        db.close().await;
    }

    #[tokio::test]
    async fn the_keeper_leaves_postgresql_alone() {
        let url = std::env::var("KAGI_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let db = Database::<Scratch>::connect(&url, 1).await.unwrap();
        assert_eq!(db.checkpoint_wal().await.unwrap(), None);
        db.close().await;
    }
}
