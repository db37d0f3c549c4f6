//! What deploy/kubernetes relies on, against the real binary and a real
//! PostgreSQL: the CA from files outside the data directory (a Secret), the
//! database URL from AIRLOCK_DATABASE_URL (a Secret), and the plain-text
//! health service the kubelet's grpc probes ask, whose readiness follows the
//! database while its liveness does not.

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_gateway::health::READY_SERVICE;
use airlock_gateway_store::testing::{self, PgCluster};
use support::{Gateway, Scratch, GATEWAY};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn check(rt: &tokio::runtime::Runtime, port: u16, service: &str) -> Result<ServingStatus, String> {
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let reply =
            HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        ServingStatus::try_from(reply.into_inner().status).map_err(|e| e.to_string())
    })
}

/// Polls until `service` reports `want`; the deadline only guards against a hang.
fn until(rt: &tokio::runtime::Runtime, gw: &Gateway, port: u16, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = check(rt, port, service);
        if got == Ok(want) {
            return;
        }
        assert!(Instant::now() < deadline, "health of {service:?} stayed {got:?}, never {want:?}: {}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_gateway_runs_as_the_kubernetes_manifests_run_it() {
    let test = "the_gateway_runs_as_the_kubernetes_manifests_run_it";
    // Its own cluster: the test stops and starts the server.
    let pg = match PgCluster::launch() {
        Ok(pg) => pg,
        Err(reason) => return testing::skip(test, &reason),
    };
    let scratch = Scratch::new("k8s");
    // The CA as the install steps make it, outside the data directory.
    let ca_dir = scratch.0.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    airlock_gateway::pki::Authority::load_or_create(&ca_dir).unwrap();
    let (ca_cert, ca_key) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    let health_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let health = format!("127.0.0.1:{health_port}");
    let url = pg.url();

    let gw = Gateway::start_with_env(
        &scratch.0,
        None,
        &["--ca-cert", ca_cert.to_str().unwrap(), "--ca-key", ca_key.to_str().unwrap(), "--health-listen", &health],
        &[("AIRLOCK_DATABASE_URL", &url)],
    );
    assert!(gw.log().contains("PostgreSQL"), "the store is the one AIRLOCK_DATABASE_URL names: {}", gw.log());
    // The CLI's --data-dir shortcut (start_with_env waited for `hosts` to
    // answer through it) trusted the gateway through the given CA's copy.
    assert_eq!(std::fs::read(gw.data.join("ca.pem")).unwrap(), std::fs::read(&ca_cert).unwrap());
    assert!(!gw.data.join("ca.key").exists(), "the CA key is never copied into the data directory");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    until(&rt, &gw, health_port, READY_SERVICE, ServingStatus::Serving);
    assert_eq!(check(&rt, health_port, ""), Ok(ServingStatus::Serving));

    pg.stop().unwrap();
    until(&rt, &gw, health_port, READY_SERVICE, ServingStatus::NotServing);
    assert_eq!(check(&rt, health_port, ""), Ok(ServingStatus::Serving), "liveness does not follow the database");

    pg.start().unwrap();
    until(&rt, &gw, health_port, READY_SERVICE, ServingStatus::Serving);
    drop(gw);

    // A CA key that is not there is named, and nothing is made in its place.
    std::fs::remove_file(&ca_key).unwrap();
    let mut run = Command::new(GATEWAY)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.0.join("data2"))
        .args(["--ca-cert", ca_cert.to_str().unwrap(), "--ca-key", ca_key.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            let _ = run.wait();
            panic!("the gateway started without its CA key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains(&ca_key.display().to_string()), "{err}");
    assert!(!ca_key.exists() && !scratch.0.join("data2/ca.key").exists());
}
