//! kagi-stack's one integration-test binary: `stack` starts whole systems as processes on
//! SQLite and PostgreSQL and walks a user through them while replicas die; `replicated`
//! fails the stack's own PostgreSQL over behind HAProxy; `chaos` is the short chaos run
//! README's test command includes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chaos;
mod replicated;
mod stack;

/// The chaos run takes the machine's two cores for itself: the other scenarios wait, so
/// their load does not look like faults to it.
static ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The multi-call binary the stacks run: this package's own, built with the tests.
fn binary() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_kagi-stack").into()
}
