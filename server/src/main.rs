//! `vsmmud`: parse arguments, validate them, run.

use std::io::IsTerminal;

use clap::Parser;
use vsmmu_server::Args;
use vsmmu_server::Config;

fn main() {
    let args = Args::parse();
    // The terminal is probed here, once, before the seccomp filter, and the
    // lines go to stderr as a plain writer: left to itself, env_logger's
    // stderr target probes the terminal (ioctl TCGETS) when it writes,
    // which the filter forbids, so a vsmmud logging to a terminal died on
    // its first line after setup.
    let style = if std::io::stderr().is_terminal() {
        env_logger::WriteStyle::Always
    } else {
        env_logger::WriteStyle::Never
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&args.log_level))
        .format_timestamp_micros()
        .write_style(style)
        .target(env_logger::Target::Pipe(Box::new(std::io::stderr())))
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
