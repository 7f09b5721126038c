//! Benchmarks, each an ignored test that reports its figures beside a baseline measured in
//! the same run, one row per figure (`table`). Run them all, or by id, with `tests/bench`
//! (`tests/bench P1 L I`), which prints the rows as one table; see docs/benchmarks.md.
//! Test names start with their id (`p1_`, `f2_`, ...) or sit in a module named for it
//! (`levers`, `instances`, `faults`, `soak`), which is how `tests/bench` selects them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod cloudwatch;
mod cold;
mod credentials;
mod faults;
mod fixture;
mod instances;
mod levers;
mod report;
mod soak;
mod startup;
mod table;
