//! `kagi-bench`: see `--help` and BENCHMARKS.md.

use clap::{Parser, Subcommand};
use kagi_bench::ceiling::{self, Ceiling};
use kagi_bench::suite::{self, SuiteSpec};
use kagi_keystore::store::{Backend, Db};

/// kagi's committed benchmarks.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// VerifyCode throughput and latency on the accepted and wrong-code paths, with the
    /// bare-tonic and bare-UPDATE ceilings, on one backend.
    Verify {
        #[command(flatten)]
        run: RunArgs,
        /// Instead: what TLS and mTLS cost the accepted path (plaintext, TLS, mTLS keystores
        /// in one run, each on a third of the accounts).
        #[arg(long)]
        tls: bool,
        /// Instead, with `both`: what Prometheus metrics cost the accepted path (keystores
        /// with `[metrics]` off and on in turn — off, on, off, on — on one database, each
        /// phase on a quarter of the accounts, `/metrics` scraped every second when on).
        #[arg(long, default_value = "off", value_parser = ["off", "both"])]
        metrics: String,
    },
    /// VerifyCode's accepted and wrong-code paths of several keystore builds
    /// (`--bin NAME=PATH`, repeated) on one seeded database, in turns.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        /// A keystore binary to measure, as NAME=PATH (repeat for each build).
        #[arg(long = "bin", required = true)]
        builds: Vec<kagi_bench::compare::Build>,
        /// Turns per build (A B, then B A, …), each on accounts of its own.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// GetCurrentKey throughput by the forms asked for (every form, PNG on first and repeat
    /// views, text only).
    CurrentKey {
        #[command(flatten)]
        run: RunArgs,
        /// Keystore binaries as NAME=PATH; default: this build's kagi-keystore.
        #[arg(long = "bin")]
        builds: Vec<kagi_bench::compare::Build>,
    },
    /// VerifyCode at a fixed rate over mTLS (open loop): the latency distribution.
    OpenLoop {
        #[command(flatten)]
        run: RunArgs,
        /// Calls per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds at the same rate before the measured ones, not recorded.
        #[arg(long, default_value_t = 5)]
        warm_up_seconds: u64,
    },
    /// Each service's start-up time, exec to ready (gRPC SERVING; the portal's `/readyz`).
    Startup {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value_t = 21)]
        runs: usize,
        /// keystore, reset, notifier, portal or all (repeat or comma-separate).
        #[arg(long = "service", value_delimiter = ',', default_value = "all")]
        services: Vec<String>,
    },
    /// Internal: serve one ceiling service (started by `verify`).
    Ceiling {
        /// echo, update or read-update.
        kind: String,
        #[arg(
            long,
            env = "KAGI_BENCH_LISTEN_ADDR",
            default_value = "127.0.0.1:50100"
        )]
        listen: std::net::SocketAddr,
        #[arg(long, env = "KAGI_BENCH_DATABASE_URL", default_value = "")]
        database_url: String,
        #[arg(long, env = "KAGI_BENCH_MAX_CONNECTIONS", default_value_t = 16)]
        max_connections: u32,
    },
}

/// The knobs `verify` and the issue-16 subcommands share.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    /// Calls per phase at most (each on a distinct account).
    #[arg(long, default_value_t = 60_000)]
    calls: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Database pool size of every server under test.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    #[arg(
        long,
        env = "KAGI_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
    )]
    postgres_url: String,
}

impl RunArgs {
    fn spec(self) -> anyhow::Result<SuiteSpec> {
        let backend = match self.backend.as_str() {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => anyhow::bail!("unknown backend {other:?}"),
        };
        Ok(SuiteSpec {
            backend,
            accounts: self.accounts,
            calls: self.calls,
            concurrency: self.concurrency,
            connections: self.connections,
            max_connections: self.max_connections,
            postgres_url: self.postgres_url,
        })
    }
}

/// The issue-16 subcommands; `None` for the others.
async fn issue16(command: &mut Option<Command>) -> Option<anyhow::Result<()>> {
    use kagi_bench::{compare, drive, keyview, openloop, startup};
    let title = |spec: &SuiteSpec, what: &str| {
        format!(
            "{what} on {:?}: {} accounts, at most {} calls per phase, {} in flight over {} connections, pool {}",
            spec.backend,
            spec.accounts,
            spec.calls,
            spec.concurrency,
            spec.connections,
            spec.max_connections
        )
    };
    let result = match command.take()? {
        Command::Compare {
            run,
            builds,
            rounds,
        } => {
            async {
                let spec = run.spec()?;
                let rows = compare::run(&spec, &builds, rounds).await?;
                drive::print_rows(&title(&spec, "VerifyCode, builds compared"), &rows);
                Ok(())
            }
            .await
        }
        Command::CurrentKey { run, mut builds } => {
            async {
                let spec = run.spec()?;
                if builds.is_empty() {
                    let path = std::env::current_exe()?.with_file_name("kagi-keystore");
                    builds.push(compare::Build {
                        name: "keystore".into(),
                        path: path.display().to_string(),
                    });
                }
                let rows = keyview::run(&spec, &builds).await?;
                drive::print_rows(&title(&spec, "GetCurrentKey by forms"), &rows);
                Ok(())
            }
            .await
        }
        Command::OpenLoop {
            run,
            rate,
            seconds,
            warm_up_seconds,
        } => {
            async {
                let spec = run.spec()?;
                let report = openloop::run(&spec, rate, seconds, warm_up_seconds).await?;
                openloop::print(&spec, &report);
                Ok(())
            }
            .await
        }
        Command::Startup {
            run,
            runs,
            services,
        } => {
            async {
                let spec = run.spec()?;
                let mut chosen = Vec::new();
                for name in &services {
                    if name == "all" {
                        chosen.extend(startup::Service::ALL);
                    } else {
                        chosen.push(startup::Service::parse(name)?);
                    }
                }
                let reports = startup::run(&spec, &chosen, runs).await?;
                startup::print(&spec, &reports);
                Ok(())
            }
            .await
        }
        other => {
            *command = Some(other);
            return None;
        }
    };
    Some(result)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut command = Some(Cli::parse().command);
    if let Some(done) = issue16(&mut command).await {
        return done;
    }
    let Some(command) = command else {
        return Ok(());
    };
    match command {
        Command::Verify { run, tls, metrics } => {
            let spec = run.spec()?;
            if metrics == "both" {
                let (rows, cpu) = kagi_bench::metrics_cost::run_metrics(&spec).await?;
                print_report(&spec, &rows);
                print_metrics_cost(&rows, &cpu);
                return Ok(());
            }
            let rows = if tls {
                suite::run_tls(&spec).await?
            } else {
                suite::run(&spec).await?
            };
            print_report(&spec, &rows);
            Ok(())
        }
        Command::Ceiling {
            kind,
            listen,
            database_url,
            max_connections,
        } => {
            let ceiling = match kind.as_str() {
                "echo" => Ceiling::Echo,
                "update" => Ceiling::Update(Db::connect(&database_url, max_connections).await?),
                "read-update" => {
                    Ceiling::ReadThenUpdate(Db::connect(&database_url, max_connections).await?)
                }
                other => anyhow::bail!("unknown ceiling {other:?}"),
            };
            ceiling::serve(ceiling, tokio::net::TcpListener::bind(listen).await?).await
        }
        _ => Ok(()),
    }
}

#[allow(clippy::print_stdout)]
fn print_report(spec: &SuiteSpec, rows: &[suite::Row]) {
    println!(
        "\nVerifyCode on {:?}: {} accounts, {} calls per phase, {} in flight over {} connections, pool {}\n",
        spec.backend,
        spec.accounts,
        spec.calls,
        spec.concurrency,
        spec.connections,
        spec.max_connections
    );
    println!("| run | calls/s | p50 ms | p99 ms | server peak RSS MiB | results |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for row in rows {
        let results: Vec<String> = row
            .report
            .results
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
            row.name,
            row.report.per_second(),
            row.report.p50.as_secs_f64() * 1000.0,
            row.report.p99.as_secs_f64() * 1000.0,
            row.peak_rss_kib as f64 / 1024.0,
            results.join(" ")
        );
    }
    let accepted = rows.iter().find(|r| r.name == "keystore, accepted");
    let update = rows
        .iter()
        .find(|r| r.name == "ceiling: one conditional UPDATE");
    if let (Some(a), Some(u)) = (accepted, update) {
        println!(
            "\naccepted path = {:.0}% of the UPDATE ceiling",
            100.0 * a.report.per_second() / u.report.per_second()
        );
    }
}

#[allow(clippy::print_stdout)]
fn print_metrics_cost(rows: &[suite::Row], cpu: &[kagi_bench::metrics_cost::CpuPerCall]) {
    use kagi_bench::metrics_cost::{cost, cpu_cost};
    println!("\n| run | server CPU µs per call |\n| --- | ---: |");
    for (row, cpu) in rows.iter().zip(cpu) {
        println!("| {} | {:.0} |", row.name, cpu.0);
    }
    if let Some((off, on, cost)) = cost(rows) {
        println!(
            "\nthroughput: metrics off {off:.0} calls/s, on {on:.0} calls/s (mean of two \
             phases each): {cost:.1} % fewer with metrics"
        );
    }
    if let Some((off, on, cost)) = cpu_cost(cpu) {
        println!(
            "server CPU per call: off {off:.0} µs, on {on:.0} µs: metrics add {cost:.1} % \
             (target ≤ 3 %)"
        );
    }
}
