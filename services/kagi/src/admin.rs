//! `kagi admin`: the help desk's look-ups and actions from a terminal (issue 15, part 3),
//! for operators without a browser. It speaks the same admin contract as the portal's
//! `/helpdesk` (`kagi.v1.KeystoreAdmin`, `ResetAdmin`, `NotifierAdmin`) over gRPC as caller
//! `helpdesk`, with that caller's token file or client certificate, and names the operator
//! in every call, so each service's audit trail shows who did it and why.

use std::path::PathBuf;

use anyhow::Context as _;
use kagi_proto::v1 as pb;
use kagi_runtime::client::{ClientSettings, channel};
use serde_json::{Value, json};

/// Look up or act on one account as a help-desk operator.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
    /// The keystore (kagi.v1.KeystoreAdmin).
    #[arg(
        long,
        env = "KAGI_ADMIN_KEYSTORE",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub keystore: String,
    /// The reset service (kagi.v1.ResetAdmin).
    #[arg(
        long,
        env = "KAGI_ADMIN_RESET",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    pub reset: String,
    /// The notifier (kagi.v1.NotifierAdmin).
    #[arg(
        long,
        env = "KAGI_ADMIN_NOTIFIER",
        default_value = "http://127.0.0.1:50053",
        global = true
    )]
    pub notifier: String,
    /// The `helpdesk` caller's bearer token, in a file (used when it exists).
    #[arg(
        long,
        env = "KAGI_ADMIN_TOKEN_FILE",
        default_value = "data/callers/helpdesk",
        global = true
    )]
    pub token_file: PathBuf,
    /// With https:// endpoints: the CA the services' certificates chain to.
    #[arg(long, env = "KAGI_ADMIN_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// mTLS: the `helpdesk` caller's client certificate (PEM), with `--key-file`.
    #[arg(long, env = "KAGI_ADMIN_CERT_FILE", global = true)]
    pub cert_file: Option<PathBuf>,
    #[arg(long, env = "KAGI_ADMIN_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// The name the services' certificate carries, when it is not the endpoint's host.
    #[arg(long, env = "KAGI_ADMIN_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// Your own account ID, recorded with every look-up and action.
    #[arg(long, env = "KAGI_ADMIN_OPERATOR", global = true)]
    pub operator: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Everything about one account: key, lockout, last login, reissue, mail, audit trail.
    Account { id: String },
    /// Clear the lockout after wrong codes; the user is mailed.
    Unlock {
        id: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Revoke the setup key: logins are refused until the user reissues (menu 2).
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Cancel the reissue in progress: the mailed code stops working.
    CancelReset {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

struct Clients {
    keystore: pb::keystore_admin_client::KeystoreAdminClient<kagi_runtime::ServiceChannel>,
    reset: pb::reset_admin_client::ResetAdminClient<kagi_runtime::ServiceChannel>,
    notifier: pb::notifier_admin_client::NotifierAdminClient<kagi_runtime::ServiceChannel>,
}

impl AdminArgs {
    fn client(&self, endpoint: &str) -> anyhow::Result<kagi_runtime::ServiceChannel> {
        let mut settings = ClientSettings::at(endpoint);
        settings.token_file = self.token_file.exists().then(|| self.token_file.clone());
        if settings.token_file.is_none() && self.cert_file.is_none() {
            anyhow::bail!(
                "no credentials: give the helpdesk caller's --token-file (none at {}) or --cert-file",
                self.token_file.display()
            );
        }
        settings.ca_file.clone_from(&self.ca_file);
        settings.cert_file.clone_from(&self.cert_file);
        settings.key_file.clone_from(&self.key_file);
        settings.tls_server_name.clone_from(&self.tls_server_name);
        Ok(channel(&settings)?)
    }

    fn clients(&self) -> anyhow::Result<Clients> {
        Ok(Clients {
            keystore: pb::keystore_admin_client::KeystoreAdminClient::new(
                self.client(&self.keystore)?,
            ),
            reset: pb::reset_admin_client::ResetAdminClient::new(self.client(&self.reset)?),
            notifier: pb::notifier_admin_client::NotifierAdminClient::new(
                self.client(&self.notifier)?,
            ),
        })
    }

    fn operator(&self) -> anyhow::Result<String> {
        let operator = match &self.operator {
            Some(o) => o.clone(),
            None => std::env::var("USER").context("say who you are: --operator ID")?,
        };
        kagi_runtime::operator::parse_operator(&operator)?;
        Ok(operator)
    }
}

/// Runs one `kagi admin` command and prints its result.
///
/// # Errors
/// Bad arguments, unreachable services, or a refusal (its status message).
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let operator = args.operator()?;
    let mut c = args.clients()?;
    let context = |reason: &str| {
        Some(pb::OperatorContext {
            operator: operator.clone(),
            reason: reason.to_owned(),
        })
    };
    let out = match &args.command {
        AdminCommand::Account { id } => account(&mut c, id, &operator).await?,
        AdminCommand::Unlock { id, reason } => {
            let reply = c
                .keystore
                .unlock_account(pb::UnlockAccountRequest {
                    account_id: id.clone(),
                    context: context(reason),
                })
                .await
                .map_err(refused)?
                .into_inner();
            let mailed = notify(&mut c, id, pb::OperatorAction::Unlock, context(reason)).await;
            json!({"account_id": id, "action": "unlock", "was_locked": reply.was_locked, "user_mailed": mailed})
        }
        AdminCommand::Revoke { id, reason } => {
            let reply = c
                .keystore
                .revoke_key(pb::RevokeKeyRequest {
                    account_id: id.clone(),
                    context: context(reason),
                })
                .await
                .map_err(refused)?
                .into_inner();
            let mailed = notify(&mut c, id, pb::OperatorAction::RevokeKey, context(reason)).await;
            json!({"account_id": id, "action": "revoke", "revoked_key_id": reply.revoked_key_id, "user_mailed": mailed})
        }
        AdminCommand::CancelReset { id, reason } => {
            let reply = c
                .reset
                .cancel_account_reset(pb::CancelAccountResetRequest {
                    account_id: id.clone(),
                    context: context(reason),
                    locale: String::new(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            json!({
                "account_id": id,
                "action": "cancel-reset",
                "previous_state": reply.previous_state().as_str_name().trim_start_matches("RESET_STATE_"),
                "user_mailed": reply.notified,
            })
        }
    };
    print(&out, args.json)
}

/// A refusal as the operator reads it: the code and the service's message.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// Asks the reset service (which holds the address) to mail the user; whether it did.
async fn notify(
    c: &mut Clients,
    id: &str,
    action: pb::OperatorAction,
    context: Option<pb::OperatorContext>,
) -> bool {
    let notice = pb::NotifyOperatorActionRequest {
        account_id: id.to_owned(),
        action: action.into(),
        context,
        notice_id: uuid_like(),
        acted_at: Some(kagi_proto::timestamp(kagi_runtime::clock::unix_ms(
            std::time::SystemTime::now(),
        ))),
        locale: String::new(),
    };
    match c.reset.notify_operator_action(notice).await {
        Ok(reply) => reply.into_inner().queued,
        Err(status) => {
            tracing::warn!(code = ?status.code(), "the user could not be mailed; the action stands");
            false
        }
    }
}

/// A fresh notice ID (the action's own, so a retry of this command mails again).
fn uuid_like() -> String {
    let bytes: [u8; 16] = kagi_runtime::random::bytes().unwrap_or([0; 16]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

fn event(source: &str, e: &pb::AuditEvent) -> Value {
    json!({"source": source, "at": time(e.at.as_ref()), "caller": e.caller, "action": e.action, "detail": e.detail})
}

async fn account(c: &mut Clients, id: &str, operator: &str) -> anyhow::Result<Value> {
    let key = c
        .keystore
        .get_account(pb::GetAccountRequest {
            account_id: id.to_owned(),
            operator: operator.to_owned(),
        })
        .await;
    let key = match key {
        Ok(reply) => Some(reply.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(refused(status)),
    };
    let reset = c
        .reset
        .get_account_reset(pb::GetAccountResetRequest {
            account_id: id.to_owned(),
            operator: operator.to_owned(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mails = c
        .notifier
        .list_recent_mails(pb::ListRecentMailsRequest {
            account_id: id.to_owned(),
            operator: operator.to_owned(),
            page_size: 20,
        })
        .await
        .map_err(refused)?
        .into_inner()
        .mails;
    let mut events: Vec<Value> = Vec::new();
    let key_json = key.as_ref().map_or(Value::Null, |k| {
        events.extend(k.recent_events.iter().map(|e| event("keystore", e)));
        let lockout = k.lockout.unwrap_or_default();
        json!({
            "enrolled": k.enrolled,
            "key_id": k.key_id,
            "created_at": time(k.key_created_at.as_ref()),
            "reissued": k.reissued,
            "revoked_at": time(k.revoked_at.as_ref()),
            "algorithm": k.algorithm().as_str_name().trim_start_matches("HASH_ALGORITHM_"),
            "digits": k.digits,
            "period_seconds": k.period_seconds,
            "failures": lockout.failures,
            "locked_until": time(lockout.locked_until.as_ref()),
            "times_locked": lockout.times_locked,
            "last_login_at": time(k.last_login_at.as_ref()),
            "last_login_drift_steps": k.last_login_drift_steps,
        })
    });
    events.extend(reset.recent_events.iter().map(|e| event("reset", e)));
    events.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
    let latest = reset.latest.as_ref().map_or(Value::Null, |r| {
        json!({
            "state": r.state().as_str_name().trim_start_matches("RESET_STATE_"),
            "started_at": time(r.started_at.as_ref()),
            "code_sent_at": time(r.code_sent_at.as_ref()),
            "code_expires_at": time(r.code_expires_at.as_ref()),
            "attempts_remaining": r.attempts_remaining,
            "resends": r.resends,
            "resends_remaining": r.resends_remaining,
        })
    });
    let mails: Vec<Value> = mails
        .iter()
        .filter_map(|m| m.delivery.as_ref().map(|d| (m, d)))
        .map(|(m, d)| {
            json!({
                "queued_at": time(d.queued_at.as_ref()),
                "kind": d.kind().as_str_name().trim_start_matches("MESSAGE_KIND_"),
                "to": m.masked_recipient,
                "state": d.state().as_str_name().trim_start_matches("DELIVERY_STATE_"),
                "attempts": d.attempts,
                "last_reply": d.last_reply,
            })
        })
        .collect();
    Ok(json!({
        "account_id": id,
        "key": key_json,
        "reset": {"recovery": reset.masked_recipient, "in_progress": reset.in_progress, "latest": latest},
        "mails": mails,
        "audit": events,
    }))
}

/// JSON as is, or a readable table: `key: value` lines, one section per object, one row
/// per list entry.
#[allow(clippy::print_stdout)]
fn print(out: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(out)?);
        return Ok(());
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let Value::Object(fields) = out else {
        println!("{out}");
        return Ok(());
    };
    for (name, value) in fields {
        match value {
            Value::Object(inner) => {
                println!("\n{name}");
                for (k, v) in inner {
                    match v {
                        Value::Object(deeper) => {
                            for (k2, v2) in deeper {
                                println!("  {:<22} {}", format!("{k}.{k2}"), scalar(v2));
                            }
                        }
                        v => println!("  {k:<22} {}", scalar(v)),
                    }
                }
            }
            Value::Array(rows) => {
                println!("\n{name} ({})", rows.len());
                for row in rows {
                    let cells: Vec<String> = row
                        .as_object()
                        .map(|o| o.values().map(scalar).collect())
                        .unwrap_or_default();
                    println!("  {}", cells.join("  |  "));
                }
            }
            v => println!("{name:<24} {}", scalar(v)),
        }
    }
    Ok(())
}
