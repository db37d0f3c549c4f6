//! airlock-agent: the Airlock daemon (`run`) and its command line.

mod audit;
mod cli;
mod daemon;
mod events;
mod kernel;
mod launch;
mod notify;
mod policy_store;
mod protected;
mod protocol;
mod secrets;
mod sessions;

fn main() {
    std::process::exit(cli::main());
}
