use clap::Parser;
use fastvirt_agent::cli::{Cli, Command, LogFormat};
use fastvirt_agent::{bench, commands, runner};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores of {model}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // One crypto provider for the API client's TLS, chosen here: builds that also enable another
    // leave rustls unable to choose, and it would panic on the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &cli.command {
        Command::Plan(args) => commands::plan(args),
        Command::Apply(args) => commands::apply(args),
        Command::Restore(args) => commands::restore(args),
        Command::Congestion(args) => commands::congestion(args).await,
        Command::Run(args) => runner::run(args).await,
        Command::Bench(args) => {
            let results = bench::run(args)?;
            let section = bench::markdown(&results, &machine());
            print!("{section}");
            if let Some(path) = &args.write_docs {
                bench::write_docs(path, &section)?;
            }
            Ok(())
        }
    }
}
