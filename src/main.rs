//! `callkeeper`: run the system locally, and look at what it keeps.

use callkeeper::crm;
use callkeeper::server::{shutdown_signal, ServeOptions, Server};
use callkeeper_core::ids::CallSid;
use callkeeper_core::store::embedded;
use clap::{Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "callkeeper", version, about = "An open backend for AI phone and WhatsApp agents on Twilio")]
struct Cli {
    /// The data folder of the embedded store.
    #[arg(long, global = true, env = "CALLKEEPER_DATA_DIR", default_value = callkeeper_core::store::open::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhooks on one port, on the embedded store (the default command).
    Serve {
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
        /// The address to listen on; 0.0.0.0 to accept connections from other machines.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
    },
    /// What the CRM holds about calls.
    Calls {
        #[command(subcommand)]
        command: CallsCommand,
    },
}

#[derive(Subcommand)]
enum CallsCommand {
    /// The most recent calls, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One call: its record, recordings and every event.
    Show {
        call_sid: String,
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callkeeper: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // No subcommand means `serve`, with its defaults and its environment (PORT).
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["callkeeper", "serve"]).command.expect("serve parses"),
    };
    match command {
        Command::Serve { port, host } => {
            callkeeper_core::telemetry::init();
            let server = Server::bind(&ServeOptions { addr: SocketAddr::new(host, port), data_dir: cli.data_dir.clone() }).await?;
            println!("{}", server.banner(&cli.data_dir));
            server.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calls { command } => {
            let db = cli.data_dir.join(embedded::DATABASE_FILE);
            if !db.exists() {
                anyhow::bail!("no callkeeper data in {} (start `callkeeper serve` there, or pass --data-dir)", cli.data_dir.display());
            }
            let stores = embedded::open_stores(&cli.data_dir, 5)?;
            match command {
                CallsCommand::List { limit, json } => print!("{}", crm::list(stores.calls.as_ref(), limit, json).await?),
                CallsCommand::Show { call_sid, json } => {
                    let sid = CallSid::parse(&call_sid)?;
                    match crm::show(stores.calls.as_ref(), &sid, json).await? {
                        Some(text) => print!("{text}"),
                        None => {
                            eprintln!("callkeeper: no call {sid} in {}", cli.data_dir.display());
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
