//! `callkeeper`: run the system locally, and look at what it keeps.

use callkeeper::server::{shutdown_signal, ServeOptions, Server};
use callkeeper::{agent_profiles, calls, dlq, fake_realtime, outbound};
use callkeeper_core::ids::CallSid;
use callkeeper_core::job::QueueName;
use callkeeper_core::profile::ProfileKey;
use callkeeper_core::store::aws::{self, AwsNames};
use callkeeper_core::store::embedded;
use callkeeper_core::store::open::{open, StoreKind};
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
    /// Where calls, jobs and recordings are kept: `embedded` (SQLite and a folder in --data-dir)
    /// or `aws` (DynamoDB, SQS and S3, named by CALLKEEPER_TABLE, CALLKEEPER_BUCKET,
    /// TRANSCRIPTION_QUEUE, REPLIES_QUEUE, EVENTS_QUEUE; honours AWS_ENDPOINT_URL).
    #[arg(long, global = true, env = "CALLKEEPER_STORE", default_value = "embedded", value_parser = ["embedded", "aws"])]
    store: String,
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
    /// Play Twilio's side of calls, and break them as real calls break: with no target, against
    /// a local stack of its own (`serve` and `relay` in --data-dir, default a fresh folder) whose
    /// Twilio REST (and with --offline, OpenAI) is the simulator's. Prints each call's timeline
    /// and record, the fault matrix, or a load summary; exits 3 when a check fails.
    Simulate(callkeeper::simulate::command::SimulateArgs),
    /// The relay on its own (the media WebSocket), as the Fargate service runs it, on the
    /// settings and the store `serve` uses: the local stack of `simulate` runs it as its own process.
    Relay {
        #[arg(long, env = "PORT", default_value_t = 8081)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
    },
    /// Place an outbound call through Twilio: answered, it gets the same TwiML (the agent, the
    /// recording) and the same watchdog as an incoming call. Needs the Twilio settings.
    Call {
        /// The number to call, +E164.
        #[arg(long)]
        to: String,
        /// The caller id, +E164; default `TWILIO_PHONE_NUMBER`.
        #[arg(long)]
        from: Option<String>,
        /// Ask Twilio to tell a person from an answering machine (`AnsweredBy` on the call).
        #[arg(long)]
        detect_machine: bool,
        /// The port of the local server whose URLs the call uses, when no Twilio settings are set.
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
    },
    /// Create the AWS table, queues (with their dead-letter queues) and bucket on an empty
    /// endpoint (`AWS_ENDPOINT_URL`, e.g. moto or LocalStack), with the names from the environment.
    DevResources,
    /// The dead-letter queues: jobs that failed too often.
    Dlq {
        /// `transcription`, `replies` or `events`.
        #[arg(long, default_value = "transcription", global = true, value_parser = ["transcription", "replies", "events"])]
        queue: String,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// What the CRM holds about calls.
    Calls {
        #[command(subcommand)]
        command: CallsCommand,
    },
    /// The CRM's users: who may sign in to read it.
    Crm {
        #[command(subcommand)]
        command: CrmCommand,
    },
    /// One person the CRM knows: their lead fields and their calls and messages.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// The lead fields across the most recent calls, a row per call that has any.
    Leads {
        /// Comma-separated values (RFC 4180, UTF-8) for a spreadsheet or another CRM.
        #[arg(long)]
        csv: bool,
        /// How many of the most recent calls to look at.
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// The AI agent's profiles: how it behaves on each of the business's numbers.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Is this deployment ready for a real call? Checks the settings, Twilio's credentials and
    /// numbers, the webhooks and the relay as Twilio reaches them, OpenAI, the store and the
    /// events receiver; one line each, ✓ or ✗ with the fix. Changes nothing, prints no secret;
    /// exits 1 when a check fails.
    Doctor {
        /// Check only this number (+E164; repeatable); default every number of the account.
        #[arg(long)]
        number: Vec<String>,
        /// A JSON list of checks, each `name`, `ok` and `detail`.
        #[arg(long)]
        json: bool,
        /// The local server's port, when the settings are the local ones `serve` made.
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
    },
    /// The account's Twilio phone numbers: whether each sends its calls and messages here, and
    /// pointing one here. Needs the Twilio settings (`PUBLIC_BASE_URL`, `TWILIO_ACCOUNT_SID`, …).
    Twilio {
        #[command(subcommand)]
        command: TwilioCommand,
        /// The local server's port, when the settings are the local ones `serve` made.
        #[arg(long, env = "PORT", default_value_t = 8080, global = true)]
        port: u16,
    },
    /// A fake of OpenAI's Realtime API on loopback: try the AI agent with no account
    /// (`OPENAI_API_KEY=sk-fake OPENAI_REALTIME_URL=ws://127.0.0.1:PORT/v1/realtime callkeeper serve`).
    FakeRealtime {
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// The key it accepts.
        #[arg(long, default_value = "sk-fake")]
        key: String,
    },
}

#[derive(Subcommand)]
enum TwilioCommand {
    /// Every number of the account, and whether its webhooks are this deployment's.
    Numbers {
        #[arg(long)]
        json: bool,
    },
    /// Point a number's calls (a call comes in, primary handler fails, status callback) and
    /// messages at this deployment; prints each field it changed, and changes nothing twice.
    /// A number the account does not own is refused (exit 2).
    Configure {
        /// The number, +E164, as Twilio lists it.
        #[arg(long)]
        number: String,
        /// Say what would change, and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Store a profile (a TOML file) for calls to --number, or the default profile without it.
    /// A bad file is refused with its line and the reason, and nothing is written.
    Set {
        #[arg(long)]
        number: Option<String>,
        file: PathBuf,
    },
    /// The profile for --number (or the default), or what its calls get instead.
    Show {
        #[arg(long)]
        number: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every stored profile.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// The dead letters, oldest first, with the error each last failed with.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: its job, receives, times and last error.
    Show { id: String },
    /// Send one dead letter (or all, with --all) back to its queue with a fresh receive count.
    Redrive {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum CrmCommand {
    /// Add, list or remove users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password (at least 12 characters) is read from standard input.
    Add {
        name: String,
        /// Set a new password for an existing user instead.
        #[arg(long)]
        replace: bool,
    },
    /// Every user, by name (never their password hashes).
    List {
        #[arg(long)]
        json: bool,
    },
    /// End every session of a user, on every device ("sign out everywhere").
    SignOut { name: String },
    /// Remove a user; their sessions end with them.
    Remove { name: String },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// The contact's lead and timeline (calls and messages, newest first).
    Show {
        /// The number, +E164.
        number: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
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
    /// The call's trace as JSON lines (kept when `CALL_TRACES` is `on` or `full`): every
    /// webhook and its answer, every Media Streams and Realtime event either way, with times.
    Trace { call_sid: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    // `simulate` makes a fresh folder unless it is given one.
    let data_dir_given = matches.value_source("data_dir").is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, data_dir_given).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callkeeper: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli, data_dir_given: bool) -> anyhow::Result<ExitCode> {
    // No subcommand means `serve`, with its defaults and its environment (PORT).
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["callkeeper", "serve"]).command.expect("serve parses"),
    };
    let kind = StoreKind::parse(&cli.store)?;
    match command {
        Command::Serve { port, host } => {
            callkeeper_core::telemetry::init();
            let server =
                Server::bind(&ServeOptions { addr: SocketAddr::new(host, port), data_dir: cli.data_dir.clone(), store: kind }).await?;
            println!("{}", server.banner(&cli.data_dir));
            server.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => callkeeper::simulate::command::run(args, &cli.data_dir, data_dir_given, kind).await,
        Command::Relay { port, host } => {
            let (config, stores) = callkeeper_core::startup::from_env().await?;
            let relay = callkeeper_relay::Relay::new(config, stores.calls.clone());
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(host, port))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?;
            println!("callkeeper relay listening on {}", listener.local_addr()?);
            callkeeper_relay::service::serve(listener, callkeeper_relay::router(relay.clone()), &relay, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call { to, from, detect_machine, port } => {
            let (config, _) = callkeeper::local_config::resolve(&cli.data_dir, SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port))?;
            let stores = open(kind, &cli.data_dir, config.queue_max_receives).await?;
            let placed = outbound::place(&config, stores.calls.as_ref(), &to, from.as_deref(), detect_machine).await?;
            println!("{placed}");
            Ok(ExitCode::SUCCESS)
        }
        Command::DevResources => {
            let names = AwsNames::from_env();
            let max_receives = callkeeper_core::config::queue_max_receives_from_env()?;
            aws::create_resources(&aws::sdk_config().await, &names, max_receives).await?;
            println!(
                "created table {}, queues {}, {} and {} (each with a -dlq after {max_receives} receives), bucket {}",
                names.table, names.transcription_queue, names.replies_queue, names.events_queue, names.bucket
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { queue, command } => {
            let name = QueueName::parse(&queue).expect("clap checked the name");
            if kind == StoreKind::Embedded && !cli.data_dir.join(embedded::DATABASE_FILE).exists() {
                anyhow::bail!("no callkeeper data in {} (start `callkeeper serve` there, or pass --data-dir)", cli.data_dir.display());
            }
            let max_receives = callkeeper_core::config::queue_max_receives_from_env()?;
            let stores = open(kind, &cli.data_dir, max_receives).await?;
            let queue = stores.queue.as_ref();
            match command {
                DlqCommand::List { json } => print!("{}", dlq::list(queue, name, json).await?),
                DlqCommand::Show { id } => match dlq::show(queue, name, &id).await? {
                    Some(text) => print!("{text}"),
                    None => {
                        eprintln!("callkeeper: no dead letter {id} in the {queue} queue", queue = name.as_str());
                        return Ok(ExitCode::from(2));
                    }
                },
                DlqCommand::Redrive { id, all } => {
                    if id.is_none() && !all {
                        anyhow::bail!("name a dead letter to redrive, or pass --all");
                    }
                    print!("{}", dlq::redrive(queue, name, id.as_deref()).await?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { number, json, port } => {
            let options = callkeeper::doctor::Options { data_dir: &cli.data_dir, store: kind, port, numbers: number };
            let checks = callkeeper::doctor::run(&options).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", callkeeper::doctor::render(&checks));
            }
            Ok(if checks.iter().all(|c| c.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Twilio { command, port } => {
            let (config, _) = callkeeper::local_config::existing(&cli.data_dir, port).await.map_err(anyhow::Error::msg)?;
            match command {
                TwilioCommand::Numbers { json } => print!("{}", callkeeper::twilio_numbers::list(&config, json).await?),
                TwilioCommand::Configure { number, dry_run } => {
                    match callkeeper::twilio_numbers::configure(&config, &number, dry_run).await? {
                        Ok(done) => print!("{done}"),
                        Err(callkeeper::twilio_numbers::Refused(why)) => {
                            eprintln!("callkeeper: {why}");
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::FakeRealtime { port, key } => {
            let options = fake_realtime::Options { key: key.clone(), ..Default::default() };
            let fake = fake_realtime::FakeRealtime::start_on(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port), options).await?;
            println!("fake Realtime API at {} (key {key:?}); Ctrl-C to stop", fake.url());
            shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent { command } => {
            let stores = open(kind, &cli.data_dir, 5).await?;
            let calls = stores.calls.as_ref();
            let key = |number: Option<String>| ProfileKey::parse(number.as_deref()).map_err(|e| anyhow::anyhow!("--number {e}"));
            match command {
                AgentCommand::Set { number, file } => match agent_profiles::set(calls, &key(number)?, &file).await? {
                    Ok(done) => print!("{done}"),
                    Err(bad) => {
                        eprintln!("callkeeper: profile refused: {bad}");
                        return Ok(ExitCode::from(2));
                    }
                },
                AgentCommand::Show { number, json } => print!("{}", agent_profiles::show(calls, &key(number)?, json).await?),
                AgentCommand::List { json } => print!("{}", agent_profiles::list(calls, json).await?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Crm { command: CrmCommand::User { command } } => {
            let stores = open(kind, &cli.data_dir, 5).await?;
            let calls = stores.calls.as_ref();
            let name = |name: &str| callkeeper_core::users::UserName::parse(name).map_err(anyhow::Error::from);
            match command {
                UserCommand::Add { name: n, replace } => match callkeeper::crm_users::add(calls, &name(&n)?, replace).await? {
                    callkeeper::crm_users::Added::Done(text) => print!("{text}"),
                    callkeeper::crm_users::Added::Refused(why) => {
                        eprintln!("callkeeper: {why}");
                        return Ok(ExitCode::from(2));
                    }
                },
                UserCommand::List { json } => print!("{}", callkeeper::crm_users::list(calls, json).await?),
                UserCommand::Remove { name: n } => {
                    if !calls.remove_user(&name(&n)?).await? {
                        eprintln!("callkeeper: no user {n}");
                        return Ok(ExitCode::from(2));
                    }
                    println!("user {n} removed");
                }
                UserCommand::SignOut { name: n } => {
                    if !calls.end_sessions(&name(&n)?, callkeeper_core::time::now_ms()).await? {
                        eprintln!("callkeeper: no user {n}");
                        return Ok(ExitCode::from(2));
                    }
                    println!("every session of {n} ended");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Contacts { command: ContactsCommand::Show { number, limit, json } } => {
            let stores = open_crm(kind, &cli.data_dir).await?;
            let phone = callkeeper_core::phone::E164::parse(&number).ok_or_else(|| anyhow::anyhow!("{number:?} is not a +E164 number"))?;
            match callkeeper::contacts::show(stores.calls.as_ref(), &phone, limit, json).await? {
                Some(text) => print!("{text}"),
                None => {
                    eprintln!("callkeeper: no contact {phone} in the CRM");
                    return Ok(ExitCode::from(2));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Leads { csv, limit } => {
            let stores = open_crm(kind, &cli.data_dir).await?;
            print!("{}", callkeeper::leads::list(stores.calls.as_ref(), limit, csv).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Calls { command } => {
            let stores = open_crm(kind, &cli.data_dir).await?;
            match command {
                CallsCommand::List { limit, json } => print!("{}", calls::list(stores.calls.as_ref(), limit, json).await?),
                CallsCommand::Trace { call_sid } => {
                    let sid = CallSid::parse(&call_sid)?;
                    match calls::trace(stores.calls.as_ref(), &sid).await? {
                        Some(lines) => print!("{lines}"),
                        None => {
                            eprintln!("callkeeper: no trace of {sid} in {} (is CALL_TRACES on?)", cli.data_dir.display());
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
                CallsCommand::Show { call_sid, json } => {
                    let sid = CallSid::parse(&call_sid)?;
                    match calls::show(stores.calls.as_ref(), &sid, json).await? {
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

/// The stores, for the commands that read the CRM: refused on an empty folder rather than
/// creating one.
async fn open_crm(kind: StoreKind, data_dir: &std::path::Path) -> anyhow::Result<callkeeper_core::store::Stores> {
    if kind == StoreKind::Embedded && !data_dir.join(embedded::DATABASE_FILE).exists() {
        anyhow::bail!("no callkeeper data in {} (start `callkeeper serve` there, or pass --data-dir)", data_dir.display());
    }
    Ok(open(kind, data_dir, 5).await?)
}
