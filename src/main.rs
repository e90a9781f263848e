//! `rtim`: run the platform in one process (`up`), run one service of the
//! mesh (`serve`), apply the database migrations of the mesh (`migrate`),
//! stream a real dataset through ingestion (`replay`), or measure the
//! services beside a baseline (`bench`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let command = cli::Command::parse();
    match command.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with `: `, skipping a cause whose text the
/// message already contains, since many errors repeat their source's text.
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}
