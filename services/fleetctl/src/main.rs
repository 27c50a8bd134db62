//! `fleetctl`: parse the command line, run the verb, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

/// `log rebuild` and `log verify` read the whole log: the same allocator as ingest (see there).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2.
    let cli = fleetctl::Cli::parse();
    // Logs go to stderr and stay quiet unless RUST_LOG asks; stdout is for results.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    if let Err(e) = fleetbus_runtime::init_tracing(fleetbus_runtime::LogFormat::from_env()) {
        eprintln!("fleetctl: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fleetctl::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
