//! The `quorum` binary: parses arguments, loads configuration, and calls into the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use quorum_server::cli::{self, AuditVerdict, CreateUser};
use quorum_server::clock::{SharedClock, SystemClock};
use quorum_server::config::{Config, LogFormat};
use quorum_server::domain::Role;
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "quorum",
    version,
    about = "Quorum: approve, then safely run, queries and scripts against production databases"
)]
struct Args {
    /// Configuration file layered over the built-in defaults (QUORUM__* variables override both).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the portal.
    Serve {
        /// Seed demo PODs and accounts into an empty store (never on a reachable deployment).
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending store migrations and exit.
    Migrate,
    /// Print the effective configuration with secrets redacted, or the reason it is invalid.
    CheckConfig,
    /// Print the OpenAPI document of the HTTP API (the frontend's types are generated from it).
    Openapi,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the master key that seals instance credentials.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Measure what the script sandbox costs on this host, beside the same work in-process,
    /// against a PostgreSQL you name (it only runs SELECTs).
    BenchSandbox {
        /// e.g. postgres://user:password@127.0.0.1:5432/postgres
        #[arg(long)]
        postgres_url: String,
        /// Runs of each measurement.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. The password is prompted for on a terminal, otherwise read from stdin.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Home POD, created if it does not exist; a manager also manages it.
        #[arg(long)]
        pod: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every instance secret under a new master key.
    Rotate {
        /// File holding the new key (32 bytes, base64). Without it a key is generated, which is
        /// only possible when the current key is the generated one in the data directory.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain and report the first broken event.
    Verify,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role (admin, manager, developer)"))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in files and log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn read_password() -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == second, "the passwords do not match");
        Ok(SecretString::from(first))
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(SecretString::from(
            line.trim_end_matches(['\n', '\r']).to_owned(),
        ))
    }
}

#[expect(clippy::print_stdout, reason = "the CLI's output is its interface")]
async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    let clock: SharedClock = Arc::new(SystemClock);
    match args.command {
        Command::Serve { demo } => {
            config.demo |= demo;
            init_logging(&config);
            let listener = tokio::net::TcpListener::bind(config.server.addr)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {} ({e}); set server.addr or QUORUM__SERVER__ADDR",
                        config.server.addr
                    )
                })?;
            tracing::info!(addr = %listener.local_addr()?, store = %cli::redact_url(&config.database_url()), "quorum listening");
            if config.demo {
                if !config.server.addr.ip().is_loopback() {
                    tracing::warn!(
                        "demo mode on a non-loopback address: the demo accounts have a published password"
                    );
                }
                eprintln!("{}", quorum_server::demo::banner(&config.public_url()));
            }
            quorum_server::run(config, listener, quorum_server::shutdown_signal()).await?;
        }
        Command::Migrate => {
            init_logging(&config);
            println!("{}", cli::migrate(&config, clock).await?);
        }
        Command::CheckConfig => {
            print!("{}", config.to_redacted_toml());
        }
        Command::Openapi => {
            println!("{}", quorum_server::http::openapi().to_pretty_json()?);
        }
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    name,
                    role,
                    pod,
                },
        } => {
            let password = read_password()?;
            let store = quorum_server::open_store(&config, clock).await?;
            println!(
                "{}",
                cli::create_user(
                    &config,
                    &store,
                    CreateUser {
                        email,
                        name,
                        role,
                        pod,
                        password
                    }
                )
                .await?
            );
        }
        Command::Keys {
            command: KeysCommand::Rotate { new_key_file },
        } => {
            let store = quorum_server::open_store(&config, clock).await?;
            println!(
                "{}",
                cli::rotate_keys(&config, &store, new_key_file.as_deref()).await?
            );
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let store = quorum_server::open_store(&config, clock).await?;
            match cli::verify_audit(&store).await? {
                AuditVerdict::Intact { events } => {
                    println!("audit chain intact: {events} events verified")
                }
                AuditVerdict::Broken {
                    seq,
                    id,
                    reason,
                    verified,
                } => {
                    println!(
                        "audit chain BROKEN at event {seq} (id {id}): {reason}; {verified} events before it verified"
                    );
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::BenchSandbox {
            postgres_url,
            iterations,
        } => {
            for line in quorum_server::bench::sandbox(&config, &postgres_url, iterations).await? {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match execute(Args::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
