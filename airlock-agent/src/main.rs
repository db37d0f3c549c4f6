mod kernel;
fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let k = kernel::Kernel::start(kernel::BackendChoice::Auto, kernel::MapSizes::default())?;
    println!("backend {} hooks {:?}", k.backend(), k.hooks());
    println!("{:?}", k.counters()?);
    Ok(())
}
