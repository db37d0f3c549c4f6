//! airlock-agent: the Airlock daemon (`run`) and its command line.

mod audit;
mod cli;
mod daemon;
mod events;
mod install;
mod kernel;
mod launch;
mod notify;
mod policy_store;
mod protocol;
mod secrets;
mod sessions;
mod systemd;

fn main() {
    std::process::exit(cli::main());
}
