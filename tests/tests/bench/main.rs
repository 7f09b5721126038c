//! Benchmarks, each an ignored test that prints its figures beside a baseline measured in
//! the same run: the cached credential path against a bare handler (`credentials`), warm
//! `credential-process` against `cat` (`cli`), the usage report against a raw GROUP BY
//! (`report`). Run in release: `tests/run --release --test bench -- --ignored --nocapture`
//! (or name one: `... -- --ignored --nocapture report::`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod credentials;
mod report;
