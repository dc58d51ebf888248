//! Several builds of the keystore against one seeded database in one run, so a change is
//! measured against what it replaces on the same machine load: each build serves the
//! accepted and the wrong-code path on accounts of its own (every code fresh), and the
//! builds take turns over `rounds` (A B, then B A, …) so neither always runs first.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kagi_proto::v1 as pb;

use crate::drive::{self, NamedRow};
use crate::load::wrong_code;
use crate::seed::{self, SeededAccount};
use crate::suite::{Seeded, Server, SuiteSpec, keystore_env, load_spec};

/// A keystore binary to measure, by a name for the report.
#[derive(Debug, Clone)]
pub struct Build {
    pub name: String,
    pub path: String,
}

impl std::str::FromStr for Build {
    type Err = String;

    /// `NAME=PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, path) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=PATH"))?;
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Seeds `spec.accounts` accounts and measures each build's accepted and wrong-code paths.
///
/// # Errors
/// Any failure to seed, spawn or load.
pub async fn run(
    spec: &SuiteSpec,
    builds: &[Build],
    rounds: usize,
) -> anyhow::Result<Vec<NamedRow>> {
    let Seeded {
        database,
        kek,
        accounts,
    } = Seeded::create(spec, false).await?;

    let turns: Vec<&Build> = (0..rounds.max(1))
        .flat_map(|round| {
            let mut order: Vec<&Build> = builds.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            order
        })
        .collect();
    let share = accounts.len() / turns.len();
    let mut rows = Vec::new();
    for (n, build) in turns.into_iter().enumerate() {
        let slice = Arc::new(accounts[n * share..(n + 1) * share].to_vec());
        let mut server = Server::spawn(
            &build.path,
            &["serve"],
            &keystore_env(spec, &database, &kek),
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
        )
        .await?;
        let client = load_spec(spec, server.addr, crate::load::CodePath::Valid).client;
        let channels = drive::connect(&client, spec.connections, |mut c| async move {
            c.verify_code(pb::VerifyCodeRequest {
                account_id: "warm-up".into(),
                code: "000000".into(),
            })
            .await
            .map(|_| ())
        })
        .await?;
        let calls = spec.calls.min(slice.len());
        for wrong in [false, true] {
            let name = format!(
                "{}, {}",
                build.name,
                if wrong { "wrong code" } else { "accepted" }
            );
            eprintln!("{name}…");
            let report = drive::closed_loop(&channels, spec.concurrency, calls, {
                let slice = slice.clone();
                move |client, i| verify(client, slice[i].clone(), wrong)
            })
            .await?;
            rows.push(NamedRow {
                name,
                report,
                peak_rss_kib: server.peak_rss_kib(),
            });
        }
        server.stop().await;
    }
    database.drop_if_postgres(spec).await;
    Ok(rows)
}

async fn verify(
    mut client: kagi_proto::v1::keystore_client::KeystoreClient<kagi_runtime::ServiceChannel>,
    account: SeededAccount,
    wrong: bool,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let code = if wrong {
        wrong_code(&account.secret, now)
    } else {
        seed::code(&account.secret, now).to_string()
    };
    let reply = client
        .verify_code(pb::VerifyCodeRequest {
            account_id: account.account_id,
            code,
        })
        .await?
        .into_inner();
    Ok(reply.result().as_str_name().to_owned())
}
