//! `vsmmud`: parse arguments, validate them, run.

use clap::Parser;
use vsmmu_server::args::Args;
use vsmmu_server::config::Config;

fn main() {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&args.log_level))
        .format_timestamp_micros()
        .init();
    let config = match Config::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vsmmud: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = vsmmu_server::run(config) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}
