//! Resolve `.local` names from the command line, concurrently through one
//! `Resolver`. Used by tests/e2e/mdns.test.mjs against a real Chromium.
//!
//!     mdns-resolve [--timeout-ms N] NAME...
//!
//! Prints `NAME ADDR [ADDR...]` per resolved name on stdout, an error line
//! on stderr per failure, and exits 1 if any name failed. `RUST_LOG` sets
//! the log filter (logs go to stderr).

use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let mut timeout = Duration::from_secs(3);
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--timeout-ms" {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(ms) => timeout = Duration::from_millis(ms),
                None => return usage(),
            }
        } else if a.starts_with('-') {
            return usage();
        } else {
            names.push(a);
        }
    }
    if names.is_empty() {
        return usage();
    }

    let resolver = match mdns::Resolver::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mdns-resolve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, name) in names.iter().cloned().enumerate() {
        let r = resolver.clone();
        tasks.spawn(async move { (i, r.resolve(&name, timeout).await) });
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);

    let mut ok = true;
    for (i, res) in results {
        match res {
            Ok(addrs) => {
                let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                println!("{} {}", names[i], addrs.join(" "));
            }
            Err(e) => {
                eprintln!("mdns-resolve: {}: {e}", names[i]);
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: mdns-resolve [--timeout-ms N] NAME...");
    ExitCode::from(2)
}
