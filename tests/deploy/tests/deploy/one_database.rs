//! All four services on ONE fresh PostgreSQL database, as production runs them on one
//! CloudNativePG cluster: each migrates into its own schema and serves, in any order and
//! concurrently, again and again; a later version of a migration set applies on top.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use kagi_runtime::random::read_or_create_secret_file;
use kagi_testkit::{Backend, TestDatabase};
use secrecy::SecretString;
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 4] = ["keystore", "reset", "notifier", "portal"];

/// What a started service left to do: its address and the task serving it.
struct Running {
    name: &'static str,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

type Started<'a> = Pin<Box<dyn Future<Output = Running> + 'a>>;

/// Builds (and so migrates) service `name` on `url` and starts serving until `stop`.
fn start<'a>(
    name: &'static str,
    url: &'a str,
    secrets: &'a Path,
    migrate: bool,
    stop: watch::Receiver<bool>,
) -> Started<'a> {
    Box::pin(async move {
        let until = async move {
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let callers = secrets.join("callers");
        read_or_create_secret_file(&callers.join("reset"), 24).unwrap();
        let (addr, task) = match name {
            "keystore" => {
                let mut s = kagi_keystore::Settings::default();
                s.server.listen_addr = any;
                s.database.url = url.into();
                s.database.migrate_on_start = migrate;
                s.auth.tokens_dir = Some(callers);
                let kek = read_or_create_secret_file(&secrets.join("kek"), 32).unwrap();
                s.kek
                    .keys
                    .insert("t".into(), SecretString::from(kek.as_str()));
                let app = kagi_keystore::Application::build(&s).await.unwrap();
                (app.local_addr(), tokio::spawn(app.run_until_stopped(until)))
            }
            "reset" => {
                let mut s = kagi_reset::Settings::default();
                s.server.listen_addr = any;
                s.database.url = url.into();
                s.database.migrate_on_start = migrate;
                s.auth.tokens_dir = Some(callers);
                s.code_hmac_key_file = Some(secrets.join("code-key"));
                let app = kagi_reset::Application::build(&s).await.unwrap();
                (app.local_addr(), tokio::spawn(app.run_until_stopped(until)))
            }
            "notifier" => {
                let mut s = kagi_notifier::Settings::default();
                s.server.listen_addr = any;
                s.database.url = url.into();
                s.database.migrate_on_start = migrate;
                s.auth.tokens_dir = Some(callers);
                s.transport.outbox_dir = secrets.join("outbox");
                s.mail.templates_dir = Some(secrets.join("templates"));
                s.sealing.key_file = secrets.join("payload-key");
                let app = kagi_notifier::Application::build(&s).await.unwrap();
                (app.local_addr(), tokio::spawn(app.run_until_stopped(until)))
            }
            _ => {
                let mut s = kagi_portal::Settings::default();
                s.server.listen_addr = any;
                s.database.url = url.into();
                s.database.migrate_on_start = migrate;
                let app = kagi_portal::Application::build(&s).await.unwrap();
                (app.local_addr(), tokio::spawn(app.run_until_stopped(until)))
            }
        };
        Running { name, addr, task }
    })
}

/// The check a kubelet's probe makes: gRPC health SERVING, or the portal's `/healthz` 200.
async fn assert_serving(running: &Running) {
    if running.name == "portal" {
        let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "portal: {reply}");
        return;
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32, "{}", running.name);
}

/// Starts `order` (one after the other, or all at once), checks each serves, stops them.
/// With `migrate` false they only serve what is there (`migrate_on_start = false`).
async fn round(
    db: &TestDatabase,
    secrets: &Path,
    order: &[&'static str],
    together: bool,
    migrate: bool,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = Vec::new();
    if together {
        let starts = order
            .iter()
            .map(|name| start(name, &db.url, secrets, migrate, stop_rx.clone()));
        for started in join_all(starts.collect()).await {
            running.push(started);
        }
    } else {
        for name in order {
            running.push(start(name, &db.url, secrets, migrate, stop_rx.clone()).await);
        }
    }
    for r in &running {
        assert_serving(r).await;
    }
    stop_tx.send(true).unwrap();
    for r in running {
        r.task.await.unwrap().unwrap();
    }
}

/// Polls every future on this task until all are done (no extra crate for `join_all`).
async fn join_all(futures: Vec<Started<'_>>) -> Vec<Running> {
    let mut slots: Vec<_> = futures.into_iter().map(|f| (Some(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, done) in &mut slots {
            if let Some(f) = future {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => {
                        *done = Some(r);
                        *future = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, done)| done).collect()
}

/// `(schema, table)` of every table in the database, from the catalogue.
async fn tables(url: &str) -> Vec<(String, String)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn all_four_services_migrate_and_serve_on_one_database_in_any_order_twice() {
    let db = TestDatabase::new(Backend::Postgres, "kagi.db").await;
    let secrets = tempfile::tempdir().unwrap();

    round(&db, secrets.path(), &SERVICES, false, true).await;
    let after_first = tables(&db.url).await;
    let mut reversed = SERVICES;
    reversed.reverse();
    round(&db, secrets.path(), &reversed, false, true).await;
    round(
        &db,
        secrets.path(),
        &["notifier", "portal", "keystore", "reset"],
        true,
        true,
    )
    .await;

    let after_all = tables(&db.url).await;
    assert_eq!(
        after_first, after_all,
        "later rounds created or lost nothing"
    );
    assert!(
        after_all.iter().all(|(schema, _)| schema != "public"),
        "nothing lands in public: {after_all:?}"
    );
    for service in SERVICES {
        assert!(
            after_all.contains(&(service.into(), "_sqlx_migrations".into())),
            "{service} keeps its own migration record: {after_all:?}"
        );
    }
    // The two tables that collided in one schema now live side by side.
    assert!(after_all.contains(&("keystore".into(), "accounts".into())));
    assert!(after_all.contains(&("reset".into(), "accounts".into())));
}

#[tokio::test]
async fn a_second_version_of_a_migration_set_applies_cleanly_beside_the_others() {
    let db = TestDatabase::new(Backend::Postgres, "kagi.db").await;
    let secrets = tempfile::tempdir().unwrap();
    round(&db, secrets.path(), &SERVICES, false, true).await;

    // Version 2 of the keystore's migrations: what ships plus one more, as an upgrade brings.
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services/keystore/migrations/postgres");
    let v2 = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, v2.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        v2.path().join("9999_upgrade_test.sql"),
        "ALTER TABLE accounts ADD COLUMN upgrade_note TEXT;\n\
         CREATE TABLE upgrade_marks (id BIGINT PRIMARY KEY);\n",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(v2.path()).await.unwrap();
    let (pool, _) = kagi_runtime::db::connect_in(&db.url, 1, Some("keystore"))
        .await
        .unwrap();
    migrator.run(&pool).await.unwrap();
    migrator.run(&pool).await.unwrap();
    pool.close().await;

    let all = tables(&db.url).await;
    assert!(
        all.contains(&("keystore".into(), "upgrade_marks".into())),
        "{all:?}"
    );
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, column_name::text FROM information_schema.columns \
         WHERE table_name = 'accounts' AND column_name = 'upgrade_note'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [("keystore".into(), "upgrade_note".into())],
        "reset.accounts untouched"
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM keystore._sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions.last(), Some(&9999));

    // The other services still migrate and serve on the upgraded database, and the
    // keystore's current version serves the upgraded schema when it does not migrate: the
    // rollout order, where the new version's migrations run first and old pods keep serving.
    round(
        &db,
        secrets.path(),
        &["reset", "notifier", "portal"],
        false,
        true,
    )
    .await;
    round(&db, secrets.path(), &["keystore"], false, false).await;
}
