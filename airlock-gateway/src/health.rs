//! The standard gRPC health service (grpc.health.v1, from `tonic-health`) on
//! a plain-text port of its own, for Kubernetes' native grpc probes: the
//! kubelet's probe speaks no TLS, and the gateway's own listener is TLS only.
//! Nothing but health is served there.
//!
//! - `""` (the server as a whole): SERVING while the gateway runs; the
//!   liveness probe. It never depends on the database, so an outage of
//!   PostgreSQL does not make Kubernetes restart every replica.
//! - [`READY_SERVICE`]: SERVING while the store answers a read, NOT_SERVING
//!   while it does not; the readiness probe, so a replica that lost its
//!   database leaves the Service until the database is back.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use airlock_gateway_store::GatewayStore;
use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::auth::DEFAULT_ORG;

/// The service name the readiness probe asks about: the fleet API, which
/// cannot answer without the store.
pub const READY_SERVICE: &str = "airlock.gateway.v1.Fleet";
/// Between two reads of the store.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Binds `listen` and serves the health service until `stop` turns true;
/// returns the bound address.
pub async fn start(listen: SocketAddr, store: GatewayStore, stop: watch::Receiver<bool>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("health_listen: listen on {listen}"))?;
    let bound = listener.local_addr().context("the health listener's address")?;
    let (reporter, service) = tonic_health::server::health_reporter();
    // Not ready until the first read of the store came back.
    reporter.set_service_status(READY_SERVICE, ServingStatus::NotServing).await;
    let check = move || {
        let store = store.clone();
        async move { store.org_by_name(DEFAULT_ORG).await.map(|_| ()).map_err(|e| e.to_string()) }
    };
    tokio::spawn(follow_store(reporter, check, stop.clone()));
    let mut stopped = stop;
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("the health service stopped: {e}");
        }
    });
    tracing::info!(addr = %bound, ready_service = READY_SERVICE, "health service (grpc.health.v1, plain text) listening");
    Ok(bound)
}

/// Sets [`READY_SERVICE`] from `check` every [`CHECK_EVERY`] until `stop`;
/// then both statuses to NOT_SERVING.
async fn follow_store<F, Fut>(reporter: HealthReporter, check: F, mut stop: watch::Receiver<bool>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<(), String>>,
{
    let mut last = ServingStatus::NotServing;
    loop {
        let now = match check().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if last == ServingStatus::Serving {
                    tracing::warn!("not ready: the store does not answer: {e}");
                }
                ServingStatus::NotServing
            }
        };
        if now != last {
            if now == ServingStatus::Serving {
                tracing::info!("ready: the store answers");
            }
            reporter.set_service_status(READY_SERVICE, now).await;
            last = now;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    reporter.set_service_status(READY_SERVICE, ServingStatus::NotServing).await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    async fn client(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        HealthClient::new(channel)
    }

    async fn status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> std::result::Result<Wire, tonic::Code> {
        match client.check(HealthCheckRequest { service: service.into() }).await {
            Ok(r) => Ok(Wire::try_from(r.into_inner().status).expect("a known status")),
            Err(s) => Err(s.code()),
        }
    }

    /// Polls until `service` reports `want`; the deadline only guards against a hang.
    async fn until(client: &mut HealthClient<tonic::transport::Channel>, service: &str, want: Wire) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = status(client, service).await;
            if got == Ok(want) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{service:?} stayed {got:?}, never {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_store_and_liveness_does_not() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status(READY_SERVICE, ServingStatus::NotServing).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let mut stopped = stop.clone();
        let server =
            tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        let store_up = Arc::new(AtomicBool::new(true));
        let up = store_up.clone();
        let check = move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".to_string())
                }
            }
        };
        let follower = tokio::spawn(follow_store(reporter, check, stop));
        let mut client = client(addr).await;

        until(&mut client, READY_SERVICE, Wire::Serving).await;
        assert_eq!(status(&mut client, "").await, Ok(Wire::Serving));
        assert_eq!(status(&mut client, "airlock.gateway.v1.Nothing").await, Err(tonic::Code::NotFound), "an unknown service is not reported healthy");

        store_up.store(false, Ordering::SeqCst);
        until(&mut client, READY_SERVICE, Wire::NotServing).await;
        assert_eq!(status(&mut client, "").await, Ok(Wire::Serving), "liveness does not follow the database");

        store_up.store(true, Ordering::SeqCst);
        until(&mut client, READY_SERVICE, Wire::Serving).await;

        stop_tx.send(true).unwrap();
        follower.await.unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_real_store_makes_the_gateway_ready() {
        let dir = std::env::temp_dir().join(format!("airlock-gw-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = GatewayStore::open(None, &dir).await.unwrap();
        store.ensure_org(DEFAULT_ORG).await.unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let addr = start("127.0.0.1:0".parse().unwrap(), store, stop).await.unwrap();
        let mut client = client(addr).await;
        until(&mut client, READY_SERVICE, Wire::Serving).await;
        assert_eq!(status(&mut client, "").await, Ok(Wire::Serving));
        stop_tx.send(true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
