//! `switchboard`: starts the shards and serves until SIGINT/SIGTERM, then drains and exits 0.

use clap::Parser;
use shards::config::{Cli, ServerConfig};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("switchboard: error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = ServerConfig::from_cli(cli)?;
    let rt = shards::server::start(&cfg)?;
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
    tracing::info!("switchboard stopped");
    Ok(())
}
