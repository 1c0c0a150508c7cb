//! `centrex`: one binary for every Centrex component.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Centrex: a multi-tenant hosted PBX on Kubernetes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the CRD YAML into crds/ and the chart.
    Crdgen {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen { root } => {
            for path in centrex_operator::crdgen::write(&root)? {
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
