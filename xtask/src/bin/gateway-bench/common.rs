//! What every part of gateway-bench shares: channels to the gateway, the
//! fleet API with its bearer token, flags, percentiles and the phase marks
//! xtask samples the gateway's CPU and memory at.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use airlock_api::gateway::v1::fleet_client::FleetClient;
use anyhow::{bail, Context, Result};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// The gateway under test: its URL and the CA its server certificate chains to.
pub struct Target {
    pub url: String,
    pub ca_pem: Vec<u8>,
}

impl Target {
    pub fn from_flags(flags: &Flags) -> Result<Target> {
        let ca = flags.get("ca")?;
        Ok(Target {
            url: flags.get("url")?.to_string(),
            ca_pem: std::fs::read(ca).with_context(|| format!("read the gateway's CA {ca}"))?,
        })
    }

    /// One HTTP/2 connection over TLS; with `identity`, mutual TLS (an agent).
    pub async fn channel(&self, identity: Option<Identity>) -> Result<Channel> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name("127.0.0.1");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("the gateway URL {:?}", self.url))?
            .tls_config(tls)
            .context("the client TLS configuration")?
            .connect_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {}", self.url))
    }

    pub async fn fleet(&self, token: &str) -> Result<Fleet> {
        let value: MetadataValue<Ascii> = format!("Bearer {token}").parse().context("the API token is not valid metadata")?;
        let channel = self.channel(None).await?;
        Ok(FleetClient::with_interceptor(channel, Bearer(value)).max_decoding_message_size(64 << 20))
    }
}

pub type Fleet = FleetClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// `--key value` pairs after the subcommand.
pub struct Flags(HashMap<String, String>);

impl Flags {
    pub fn parse(args: &[String]) -> Result<Flags> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let Some(name) = key.strip_prefix("--") else { bail!("expected --flag, got {key:?}") };
            let value = it.next().with_context(|| format!("--{name} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Flags(map))
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.0.get(key).map(String::as_str).with_context(|| format!("--{key} is required"))
    }

    pub fn opt(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.get(key)?;
        text.parse().map_err(|e| anyhow::anyhow!("--{key} {text:?}: {e}"))
    }
}

pub fn read_token(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("read the API token {path}"))?.trim().to_string())
}

/// Tells xtask (reading our stdout line by line) to sample the gateway now.
pub fn mark(name: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "mark {name}");
    let _ = out.flush();
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Nearest-rank percentile of sorted samples (NaN for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A thousand streams are a thousand sockets: the soft limit up to the hard one.
pub fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// This process's CPU time so far (the simulated agents share the machine's cores with the gateway).
pub fn own_cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only the struct passed.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A small deterministic generator (xorshift): the same data on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
