//! What the gateway's integration tests share: a scratch directory, the
//! gateway binary started on loopback with its CLI, a simulated agent, and
//! the OpenID provider and browser of the OIDC tests.
#![allow(dead_code)]

pub mod agent;
pub mod oidc;

use airlock_api::gateway::v1::fleet_client::FleetClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_airlock-gateway");

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("airlock-gwcli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Gateway {
    pub child: Child,
    pub data: PathBuf,
    log: PathBuf,
}

impl Gateway {
    /// `airlock-gateway run` on SQLite in `root/data`, on a free loopback
    /// port; returns once its CLI gets an answer.
    pub fn start(root: &Path) -> Gateway {
        Gateway::start_with(root, None)
    }

    /// The same on the PostgreSQL database `database_url`, if given.
    pub fn start_with(root: &Path, database_url: Option<&str>) -> Gateway {
        Gateway::start_with_args(root, database_url, &[])
    }

    /// The same with more `run` flags.
    pub fn start_with_args(root: &Path, database_url: Option<&str>, extra: &[&str]) -> Gateway {
        Gateway::start_with_env(root, database_url, extra, &[])
    }

    /// The same with environment variables for `run`.
    pub fn start_with_env(root: &Path, database_url: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let data = root.join("data");
        let log = root.join("gateway.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let mut command = Command::new(GATEWAY);
        command.args(["run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(&data);
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        command.args(extra).envs(env.iter().copied());
        let child = command
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start the gateway");
        let mut gw = Gateway { child, data, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(gw.data.join("url").exists() && gw.cli(&["hosts"]).status.success()) {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("the gateway exited ({status}): {}", gw.log());
            }
            assert!(Instant::now() < deadline, "the gateway never answered: {}", gw.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        gw
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        std::fs::read_to_string(self.data.join("url")).expect("the gateway's url file").trim().to_string()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data.join("ca.pem")).expect("the gateway's CA")
    }

    /// The CLI as the gateway's first admin (its data directory's token).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(GATEWAY).args(args).arg("--data-dir").arg(&self.data).output().expect("run the CLI")
    }

    /// The CLI with another API token.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(GATEWAY).args(args).arg("--data-dir").arg(&self.data).args(["--token", token]).output().expect("run the CLI")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.cli(args))
    }

    pub fn ok_as(&self, token: &str, args: &[&str]) -> String {
        succeeded(args, self.cli_as(token, args))
    }

    pub fn err(&self, args: &[&str]) -> String {
        failed(args, self.cli(args))
    }

    pub fn err_as(&self, token: &str, args: &[&str]) -> String {
        failed(args, self.cli_as(token, args))
    }

    /// A new API token of `role`, labelled `label`.
    pub fn api_token(&self, role: &str, label: &str) -> String {
        self.ok(&["token", "create", "--role", role, "--label", label]).trim().to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn succeeded(args: &[&str], out: Output) -> String {
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(args: &[&str], out: Output) -> String {
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The fleet API straight, for what the CLI never sends.
pub struct FleetApi {
    runtime: tokio::runtime::Runtime,
    client: FleetClient<InterceptedService<Channel, Bearer>>,
}

#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

impl FleetApi {
    pub fn connect(gw: &Gateway, token: &str) -> FleetApi {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(gw.ca_pem())).domain_name("127.0.0.1");
        let endpoint = Endpoint::from_shared(gw.url()).expect("the URL").tls_config(tls).expect("TLS");
        let channel = runtime.block_on(endpoint.connect()).expect("connect to the gateway");
        let bearer = Bearer(format!("Bearer {token}").parse().expect("the token as a header"));
        FleetApi { runtime, client: FleetClient::with_interceptor(channel, bearer) }
    }

    pub fn client(&self) -> FleetClient<InterceptedService<Channel, Bearer>> {
        self.client.clone()
    }

    pub fn run<F: std::future::Future>(&self, call: F) -> F::Output {
        self.runtime.block_on(call)
    }
}
