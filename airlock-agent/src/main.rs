//! airlock-agent: the Airlock daemon (`run`) and its command line.

fn main() {
    std::process::exit(airlock_agent::cli::main());
}
