//! The portal's one integration-test binary (one binary links once, on a 2-core machine):
//! `pages` drives the portal over plain HTTP, as a browser without JavaScript sees it;
//! `browser` drives it in headless Chromium through `webdriver`. Both run against the real
//! keystore, notifier (delivering to a real SMTP server) and reset service that `common`
//! starts for each test, on SQLite or PostgreSQL. `security` plays the attacker (issue 9),
//! as do `login_otp` (the second factor of the portal's own login) and `key_notice` (every
//! display of the key is mailed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod check;
mod common;
mod helpdesk;
mod key_notice;
mod login_otp;
mod metrics;
mod mtls;
mod pages;
mod security;
mod webdriver;
