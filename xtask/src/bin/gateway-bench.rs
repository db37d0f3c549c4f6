//! `gateway-bench fleet|fill|query --flag value ...` (`cargo xtask bench
//! gateway` builds it in release and runs it against a gateway it started):
//! the client side of the gateway benchmark. Prints `mark NAME` lines while
//! it runs (xtask samples the gateway then) and one JSON object last, on a
//! line starting `result `, then holds its connections until stdin closes.

#[path = "gateway-bench/agents.rs"]
mod agents;
#[path = "gateway-bench/common.rs"]
mod common;
#[path = "gateway-bench/fill.rs"]
mod fill;
#[path = "gateway-bench/fleet.rs"]
mod fleet;
#[path = "gateway-bench/query.rs"]
mod query;
#[path = "gateway-bench/synth.rs"]
mod synth;
#[path = "gateway-bench/ui.rs"]
mod ui;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else { bail!("usage: gateway-bench fleet|fill|query --flag value ...") };
    let flags = common::Flags::parse(&args[1..])?;
    common::raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the runtime")?;
    let result = runtime.block_on(async {
        match command.as_str() {
            "fleet" => fleet::run(&flags).await,
            "fill" => fill::run(&flags).await,
            "query" => query::run(&flags).await,
            other => bail!("unknown command {other:?}: fleet, fill or query"),
        }
    })?;
    println!("result {result}");
    // Our connections stay open until xtask, having stopped the gateway,
    // closes our stdin: a client going away is not what is measured here.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    runtime.shutdown_background();
    Ok(())
}
