//! `switchboard`: starts the shards and serves until SIGINT/SIGTERM, then drains and exits 0.
//! `switchboard --check-config FILE` validates a configuration and prints the effective
//! settings without starting anything.

use std::path::PathBuf;

use clap::Parser;
use shards::config::{Cli, ServerConfig};
use shards::log_lines::{JsonLines, LogFormat};

/// The server's flags plus the ones that only shape this process (not in the config file).
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Thread-per-core io_uring messaging switch"
)]
struct Args {
    #[command(flatten)]
    cli: Cli,
    /// Log lines as text or as one JSON object per line (levels from RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate this config file (merged with the other flags; a given certificate and key
    /// must load), print the effective settings as TOML and exit: 0 when valid, 1 with the
    /// reason otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() {
    let mut args = Args::parse();
    init_logs(args.log_format);
    if let Some(file) = args.check_config.take() {
        args.cli.config = Some(file);
        match check_config(args.cli) {
            Ok(effective) => {
                print!("{effective}");
                return;
            }
            Err(e) => {
                eprintln!("switchboard: error: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = run(args.cli) {
        eprintln!("switchboard: error: {e}");
        std::process::exit(1);
    }
}

/// The settings `cli` resolves to, after checking that a given certificate and key load.
fn check_config(cli: Cli) -> anyhow::Result<String> {
    let cfg = ServerConfig::from_cli(cli)?;
    if let (true, Some((cert, key))) = (cfg.tls, &cfg.cert_key) {
        engine::tls::server_config(&engine::tls::CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })?;
    }
    Ok(shards::config::show::effective_toml(&cfg))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.event_format(JsonLines).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = ServerConfig::from_cli(cli)?;
    let (rt, media) = shards::server::start_all(&cfg)?;
    engine::shutdown::stop_on_signals(&rt.stop_flag())?;
    tracing::info!(
        addr = %rt.local_addr(),
        admin = ?rt.admin_addr(),
        shards = rt.shards(),
        tls = cfg.tls,
        connections_max = rt.connections_max(),
        data_dir = %cfg.data_dir.display(),
        "{}",
        shards::server::LISTENING
    );
    rt.join()?;
    shards::cluster::gateway::wait_left();
    drop(media);
    tracing::info!("switchboard stopped");
    Ok(())
}
