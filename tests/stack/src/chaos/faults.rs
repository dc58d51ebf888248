//! The fault schedule, drawn from a seed so a run can be repeated, and its injection.
//!
//! Two lanes run side by side: the process lane (a SIGKILLed replica of each service,
//! restarted after a pause; a primary failover; a PostgreSQL restart — one at a time, in a
//! seeded order at seeded gaps), and the mail lane (the SMTP server down, then answering
//! 451, then back), since mail faults delay mail but fail no call.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};

use super::journal::{FaultKind, Journal};
use std::collections::BTreeMap;

use crate::haproxy::Front;
use crate::mailbox::{Mailbox, SmtpMode};
use crate::postgres::PgCluster;
use crate::replica::{Replica, Service};

/// One planned fault of the process lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Since the load started.
    pub at: Duration,
    pub kind: FaultKind,
    /// Which replica (for kills).
    pub replica: usize,
    /// How long a killed replica stays dead.
    pub pause: Duration,
}

/// The whole schedule of a run.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub process: Vec<Planned>,
    /// When each SMTP outage starts (one per 200 s of run, at least one); each is down for
    /// `smtp_down`, then answers 451 for `smtp_4xx`.
    pub smtp: Vec<Duration>,
    pub smtp_down: Duration,
    pub smtp_4xx: Duration,
}

/// What the schedule is drawn for.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub seconds: u64,
    pub seed: u64,
    pub replicas: usize,
    /// The replicated database is there to fail over and restart.
    pub database_faults: bool,
    pub smtp_down: Duration,
    pub smtp_4xx: Duration,
}

const KILLS: [FaultKind; 4] = [
    FaultKind::KillKeystore,
    FaultKind::KillNotifier,
    FaultKind::KillReset,
    FaultKind::KillPortal,
];

/// Draws the schedule: every fault kind at least once; longer runs repeat rounds of all
/// kinds, each round in a new seeded order. Faults start after a 5 s warm-up and end by
/// the last tenth of the run, so the last repairs are checked under load too.
pub fn schedule(plan: &Plan) -> Schedule {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut kinds: Vec<FaultKind> = KILLS.to_vec();
    if plan.database_faults {
        kinds.extend([FaultKind::PrimaryFailover, FaultKind::PostgresRestart]);
    }
    let window = Duration::from_secs(plan.seconds)
        .mul_f64(0.9)
        .saturating_sub(Duration::from_secs(5));
    // A failover takes ~10 s with the standby's rebuild, a kill ~3 s: one round's share.
    let round_secs: u64 = kinds
        .iter()
        .map(|k| {
            if *k == FaultKind::PrimaryFailover {
                12
            } else {
                5
            }
        })
        .sum();
    let rounds = (window.as_secs() / round_secs.max(1)).max(1);
    let slots = usize::try_from(rounds).unwrap_or(1) * kinds.len();
    let gap = window / u32::try_from(slots.max(1)).unwrap_or(1);
    let mut process = Vec::new();
    for round in 0..rounds {
        kinds.shuffle(&mut rng);
        for (i, kind) in kinds.iter().enumerate() {
            let slot =
                u32::try_from(usize::try_from(round).unwrap_or(0) * kinds.len() + i).unwrap_or(0);
            process.push(Planned {
                at: Duration::from_secs(5) + gap * slot,
                kind: *kind,
                replica: rng.random_range(0..plan.replicas.max(1)),
                pause: Duration::from_millis(rng.random_range(1_000..4_000)),
            });
        }
    }
    let outage = plan.smtp_down + plan.smtp_4xx;
    let outages = u32::try_from((plan.seconds / 200).max(1)).unwrap_or(1);
    let share = window / outages;
    let smtp = (0..outages)
        .map(|i| {
            let latest = share.saturating_sub(outage);
            let latest_ms = u64::try_from(latest.as_millis()).unwrap_or(u64::MAX).max(1);
            Duration::from_secs(5)
                + share * i
                + Duration::from_millis(rng.random_range(0..latest_ms))
        })
        .collect();
    Schedule {
        process,
        smtp,
        smtp_down: plan.smtp_down,
        smtp_4xx: plan.smtp_4xx,
    }
}

/// Injects the process lane's faults at their times; returns when all are repaired.
///
/// # Errors
/// A repair failed (a replica did not restart, the standby did not sync): the stack is
/// broken and the run is over.
pub async fn process_lane(
    replicas: &mut BTreeMap<Service, Vec<Replica>>,
    pg: &mut Option<PgCluster>,
    front: Option<&Front>,
    plan: &[Planned],
    journal: &Journal,
    started: tokio::time::Instant,
) -> anyhow::Result<()> {
    for planned in plan {
        tokio::time::sleep_until(started + planned.at).await;
        let fault = journal.fault_start(planned.kind);
        let service = match planned.kind {
            FaultKind::KillKeystore => Some(Service::Keystore),
            FaultKind::KillNotifier => Some(Service::Notifier),
            FaultKind::KillReset => Some(Service::Reset),
            FaultKind::KillPortal => Some(Service::Portal),
            _ => None,
        };
        if let Some(service) = service {
            let replica = replicas
                .get_mut(&service)
                .and_then(|r| r.get_mut(planned.replica))
                .ok_or_else(|| anyhow::anyhow!("no replica {} of {service}", planned.replica))?;
            replica.kill().await?;
            tokio::time::sleep(planned.pause).await;
            replica.restart().await?;
            let n = replicas.get(&service).map_or(0, Vec::len);
            if let Some(front) = front {
                front
                    .wait_up(service.name(), n, Duration::from_secs(30))
                    .await?;
            }
        } else if let Some(pg) = pg.as_mut() {
            match planned.kind {
                FaultKind::PrimaryFailover => pg.failover().await?,
                _ => pg.restart_primary().await?,
            }
            if let Some(front) = front {
                front.wait_up("pg-rw", 1, Duration::from_secs(30)).await?;
            }
        }
        journal.fault_end(fault);
    }
    Ok(())
}

/// The mail lane: at each planned time, down for `smtp_down`, then 451 for `smtp_4xx`,
/// then accepting again.
pub async fn smtp_lane(
    mailbox: &mut Mailbox,
    schedule: &Schedule,
    journal: &Journal,
    started: tokio::time::Instant,
) {
    for at in &schedule.smtp {
        tokio::time::sleep_until(started + *at).await;
        let fault = journal.fault_start(FaultKind::SmtpOutage);
        mailbox.set_mode(SmtpMode::Down).await;
        tokio::time::sleep(schedule.smtp_down).await;
        mailbox.set_mode(SmtpMode::Greylisting).await;
        tokio::time::sleep(schedule.smtp_4xx).await;
        mailbox.set_mode(SmtpMode::Accepting).await;
        journal.fault_end(fault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seconds: u64, seed: u64) -> Plan {
        Plan {
            seconds,
            seed,
            replicas: 3,
            database_faults: true,
            smtp_down: Duration::from_secs(30),
            smtp_4xx: Duration::from_secs(15),
        }
    }

    #[test]
    fn a_seed_repeats_its_schedule_and_another_seed_changes_it() {
        let a = schedule(&plan(600, 13));
        assert_eq!(a.process, schedule(&plan(600, 13)).process);
        assert_eq!(a.smtp, schedule(&plan(600, 13)).smtp);
        assert_ne!(a.process, schedule(&plan(600, 14)).process);
    }

    #[test]
    fn every_fault_kind_is_injected_in_short_and_long_runs_and_ends_before_the_last_tenth() {
        for seconds in [40, 60, 600] {
            let s = schedule(&plan(seconds, 7));
            for kind in KILLS
                .iter()
                .chain(&[FaultKind::PrimaryFailover, FaultKind::PostgresRestart])
            {
                assert!(
                    s.process.iter().any(|p| p.kind == *kind),
                    "{kind:?} in {seconds} s"
                );
            }
            assert!(!s.smtp.is_empty());
            let last = s.process.iter().map(|p| p.at).max().unwrap();
            assert!(
                last < Duration::from_secs(seconds).mul_f64(0.9),
                "{seconds} s: {last:?}"
            );
            assert!(s.process.iter().all(|p| p.replica < 3));
        }
        assert!(schedule(&plan(600, 7)).smtp.len() >= 3);
    }
}
