//! airlock-agent: the Airlock daemon (`run`) and its command line.

mod api;
mod audit;
mod cli;
mod daemon;
mod dns;
mod events;
mod install;
mod hostnames;
mod identity;
mod kernel;
mod launch;
mod notify;
mod operator;
mod policy_store;
mod protected;
mod protocol;
mod secrets;
mod sessions;
mod systemd;
mod store;
mod store_bench;

fn main() {
    std::process::exit(cli::main());
}
