//! Tools for people who write policy plugins: `ferrosync policy new` (a plugin crate and
//! its bundle, outside any checkout), `pin` (the built component into its bundle, with
//! its digest), `inspect` (what a component is, as the host sees it) and `bench` (its
//! decision latency over its own test cases).
//!
//! None of these needs a cluster; `new` and `pin` write only where they are told.

pub mod bench;
mod cli;
pub mod inspect;
pub mod pin;
pub mod scaffold;

pub use cli::{Command, run};
