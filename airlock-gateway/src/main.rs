fn main() {
    std::process::exit(airlock_gateway::cli::main());
}
