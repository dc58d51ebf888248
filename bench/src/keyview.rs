//! `GetCurrentKey`, the manual's menu 1 as the portal calls it, by the forms asked for:
//! every form (what callers got before they could choose), the PNG alone on a key's first
//! view in the process and on a repeat view (its QR mask remembered), and the text alone
//! (menu 3). Builds given with `--bin` run one after another on accounts of their own.

use std::sync::Arc;

use kagi_proto::v1 as pb;

use crate::compare::Build;
use crate::drive::{self, NamedRow};
use crate::suite::{Seeded, Server, SuiteSpec, keystore_env, load_spec};

const PORTAL_TOKEN: &str = "bench-portal-token-0123456789";

/// One measured phase: its name, the accounts it views, the forms it asks for.
type Phase<'a> = (&'static str, &'a Arc<Vec<String>>, &'static [pb::KeyForm]);

/// Seeds `spec.accounts` accounts and measures each build's `GetCurrentKey` by forms.
///
/// # Errors
/// Any failure to seed, spawn or load.
pub async fn run(spec: &SuiteSpec, builds: &[Build]) -> anyhow::Result<Vec<NamedRow>> {
    let Seeded {
        database,
        kek,
        accounts,
    } = Seeded::create(spec, false).await?;
    let accounts: Vec<String> = accounts.into_iter().map(|a| a.account_id).collect();

    let share = accounts.len() / builds.len().max(1) / 2;
    let mut rows = Vec::new();
    for (n, build) in builds.iter().enumerate() {
        let first = Arc::new(accounts[2 * n * share..(2 * n + 1) * share].to_vec());
        let second = Arc::new(accounts[(2 * n + 1) * share..(2 * n + 2) * share].to_vec());
        let mut env = keystore_env(spec, &database, &kek);
        env.push((
            "KAGI_KEYSTORE_AUTH__TOKENS__PORTAL".to_owned(),
            PORTAL_TOKEN.to_owned(),
        ));
        let mut server = Server::spawn(
            &build.path,
            &["serve"],
            &env,
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
        )
        .await?;
        let mut client = load_spec(spec, server.addr, crate::load::CodePath::Valid).client;
        client.token = Some(PORTAL_TOKEN.into());
        let channels = drive::connect(&client, spec.connections, |mut c| async move {
            c.get_current_key(request("warm-up", &[])).await.map(|_| ())
        })
        .await?;
        let phases: [Phase<'_>; 4] = [
            ("every form (no forms named)", &first, &[]),
            (
                "PNG only (menu 1), first view",
                &second,
                &[pb::KeyForm::QrPng],
            ),
            (
                "PNG only (menu 1), repeat view",
                &second,
                &[pb::KeyForm::QrPng],
            ),
            ("text only (menu 3)", &second, &[pb::KeyForm::Text]),
        ];
        for (what, slice, forms) in phases {
            let name = format!("{}, {what}", build.name);
            eprintln!("{name}…");
            let calls = spec.calls.min(slice.len());
            let forms = forms.to_vec();
            let report = drive::closed_loop(&channels, spec.concurrency, calls, {
                let slice = Arc::clone(slice);
                move |mut client, i| {
                    let request = request(&slice[i], &forms);
                    async move {
                        let key = client.get_current_key(request).await?.into_inner().key;
                        let key = key.ok_or_else(|| anyhow::anyhow!("no key in the reply"))?;
                        Ok(format!(
                            "png={} svg={}",
                            !key.qr_png.is_empty(),
                            !key.qr_svg.is_empty()
                        ))
                    }
                }
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

fn request(account: &str, forms: &[pb::KeyForm]) -> pb::GetCurrentKeyRequest {
    pb::GetCurrentKeyRequest {
        account_id: account.to_owned(),
        forms: forms.iter().map(|f| i32::from(*f)).collect(),
    }
}
