//! Nothing to link: this crate holds one integration-test binary, `tests/deploy`, checking
//! what kagi ships for production (see the crate description and `deploy/README.md`).
