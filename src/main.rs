//! `rtim`: run the platform in one process (`up`), run one service of the
//! mesh (`serve`), or stream a real dataset through ingestion (`replay`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let command = cli::Command::parse();
    match command.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
