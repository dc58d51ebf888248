//! What kagi ships for production, checked before a platform team meets it: the four
//! services sharing one PostgreSQL database (`one_database`), and the kustomize manifests
//! under `deploy/kubernetes` (`manifests`: render, strict validation, custom resources,
//! checkov; `settings`: every embedded TOML loads; `monitoring`: alerts, dashboard,
//! ServiceMonitors).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod manifests;
mod monitoring;
mod one_database;
mod settings;
