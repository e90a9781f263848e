//! Command-line parsing and dispatch.

mod bench;
mod migrate;
mod replay;
mod serve;
mod signal;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Real-time interaction management for e-commerce.
#[derive(Debug, Parser)]
#[command(name = "rtim", version, about)]
pub struct Command {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Run every service and the gateway in one process, with SQLite files,
    /// an in-process bus and an in-process cache.
    Up(up::UpArgs),
    /// Run one service against the backends named in its configuration.
    Serve(serve::ServeArgs),
    /// Apply the database migrations of the named services, or of every
    /// service with tables, and exit.
    Migrate(migrate::MigrateArgs),
    /// Stream a dataset through ingestion over gRPC.
    Replay(replay::ReplayArgs),
    /// Measure throughput and latency of the running services beside a baseline.
    Bench(Box<rtim_bench::BenchArgs>),
}

impl Command {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.action {
            Action::Up(args) => up::run(args).await,
            Action::Serve(args) => serve::run(args).await,
            Action::Migrate(args) => migrate::run(args).await,
            Action::Replay(args) => replay::run(args).await,
            Action::Bench(args) => bench::run(*args).await,
        }
    }
}

/// Data folder of `rtim up` when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(".rtim")
}
