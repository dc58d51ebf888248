//! The stack's own PostgreSQL: a primary and a synchronous standby behind HAProxy's `pg-rw`
//! listener, which follows the primary through a failover and a restart, with every
//! acknowledged write still there.

use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_stack::chaos::load::bearer;
use kagi_stack::{Service, StackBuilder, Storage};
use sqlx::Connection as _;
use tonic::transport::Channel;

async fn in_recovery(url: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let (recovering,): (bool,) = sqlx::query_as("SELECT pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    recovering
}

async fn enroll(keystore: &mut KeystoreClient<Channel>, token: &str, id: &str) -> String {
    let mut last = None;
    // The first call after a failover may meet a pool connection to the dead primary.
    for _ in 0..50 {
        match keystore
            .enroll(bearer(
                token,
                pb::EnrollRequest {
                    account_id: id.into(),
                },
            ))
            .await
        {
            Ok(reply) => return reply.into_inner().key.unwrap().key_id,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                last = Some(status);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("enroll {id} never succeeded: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_follows_the_primary_through_failover_and_restart_and_no_acknowledged_write_is_lost()
 {
    let _shared = crate::ALONE.read().await;
    let mut stack = StackBuilder::new(crate::binary())
        .storage(Storage::PostgresReplicated)
        .start()
        .await
        .unwrap();
    let front = stack.database_url(Service::Keystore).to_owned();
    let primary = stack.pg.as_ref().unwrap().primary_url("kagi");
    assert!(!in_recovery(&front).await, "pg-rw reaches the primary");
    assert!(!in_recovery(&primary).await);
    let ports = stack.pg.as_ref().unwrap().ports();
    let standby_port = ports
        .iter()
        .find(|p| !primary.contains(&format!(":{p}/")))
        .unwrap();
    let standby = format!("postgres://postgres@127.0.0.1:{standby_port}/kagi?sslmode=disable");
    assert!(in_recovery(&standby).await, "the other node is a standby");

    let token = stack.token("onboarding").unwrap();
    let channel = Channel::from_shared(format!("http://{}", stack.addr(Service::Keystore)))
        .unwrap()
        .connect_lazy();
    let mut keystore = KeystoreClient::new(channel);
    let before = enroll(&mut keystore, &token, "before").await;

    stack.pg.as_mut().unwrap().failover().await.unwrap();
    stack.wait_front_up("pg-rw", 1).await.unwrap();
    let promoted = stack.pg.as_ref().unwrap().primary_url("kagi");
    assert_eq!(promoted, standby, "the standby was promoted");
    assert!(!in_recovery(&front).await, "pg-rw follows the new primary");
    let after = enroll(&mut keystore, &token, "after").await;

    stack.pg.as_mut().unwrap().restart_primary().await.unwrap();
    stack.wait_front_up("pg-rw", 1).await.unwrap();
    enroll(&mut keystore, &token, "restarted").await;

    // Both keys acknowledged before the failover and the restart are there, on the primary.
    let mut conn = sqlx::PgConnection::connect(&front).await.unwrap();
    let keys: Vec<(String,)> =
        sqlx::query_as("SELECT current_key_id FROM keystore.accounts ORDER BY account_id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let keys: Vec<String> = keys.into_iter().map(|(k,)| k).collect();
    assert!(keys.contains(&before) && keys.contains(&after), "{keys:?}");
    assert_eq!(keys.len(), 3);
    stack.stop().await;
}
