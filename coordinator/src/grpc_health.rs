//! The standard gRPC side services next to FabricApi and AgentSync: `grpc.health.v1.Health`,
//! whose status follows the replica's currency (the same judgement as `/healthz`:
//! `Fabric::is_current`), and server reflection (v1 and v1alpha), so `grpcurl` and load
//! balancers need no local copy of `stackfabric.proto`. The same currency also drives the
//! `sf_coordinator_index_current` gauge the "etcd unreachable" alert watches.

use sf_proto::v1::{agent_sync_server::AgentSyncServer, fabric_api_server::FabricApiServer};
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service names whose health is reported: "" (the whole server) and both services.
fn services() -> [&'static str; 3] {
    [
        "",
        <FabricApiServer<crate::api::Api> as NamedService>::NAME,
        <AgentSyncServer<crate::sync::Sync> as NamedService>::NAME,
    ]
}

/// Keeps `reporter` at SERVING while `current` is true and NOT_SERVING otherwise, until the
/// sender of `current` is gone. A replica that is not current refuses agents' streams, so a
/// balancer or a client asking the health service moves on to another replica.
pub async fn follow_currency(reporter: HealthReporter, mut current: watch::Receiver<bool>) {
    loop {
        let status = if *current.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in services() {
            reporter.set_service_status(name, status).await;
        }
        if current.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps `gauge` at 1 while `current` is true, 0 otherwise, until its sender is gone.
pub async fn gauge_currency(gauge: sf_metrics::Gauge, mut current: watch::Receiver<bool>) {
    loop {
        gauge.set(i64::from(*current.borrow_and_update()));
        if current.changed().await.is_err() {
            return;
        }
    }
}

/// The reflection services (v1 and the v1alpha older grpcurl versions ask for), describing
/// FabricApi, AgentSync and Health.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sf_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus as Pb;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::server::HealthService;

    async fn status_of(h: &HealthService, service: &str) -> Option<Pb> {
        let req = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        let r = h.check(req).await.ok()?.into_inner();
        Pb::try_from(r.status).ok()
    }

    /// Polls (up to 2 s) until every reported service shows `want`.
    async fn settles(h: &HealthService, want: Pb) -> bool {
        for _ in 0..200 {
            let mut all = true;
            for name in services() {
                all &= status_of(h, name).await == Some(want);
            }
            if all {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn health_follows_the_replicas_currency() {
        let reporter = HealthReporter::new();
        let health = HealthService::from_health_reporter(reporter.clone());
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(follow_currency(reporter, rx));
        assert!(
            settles(&health, Pb::NotServing).await,
            "not current: NOT_SERVING"
        );
        tx.send(true).unwrap();
        assert!(settles(&health, Pb::Serving).await, "current: SERVING");
        tx.send(false).unwrap();
        assert!(
            settles(&health, Pb::NotServing).await,
            "fell behind: NOT_SERVING"
        );
        assert_eq!(
            services()[1],
            "stackfabric.v1.FabricApi",
            "grpcurl names the service so"
        );
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_gauge_follows_currency() {
        let gauge = sf_metrics::Gauge::default();
        let (tx, rx) = watch::channel(true);
        let task = tokio::spawn(gauge_currency(gauge.clone(), rx));
        for want in [1, 0, 1] {
            if want == 0 {
                tx.send(false).unwrap();
            } else {
                tx.send(true).unwrap();
            }
            let mut seen = -1;
            for _ in 0..200 {
                seen = gauge.get();
                if seen == want {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(seen, want);
        }
        drop(tx);
        task.await.unwrap();
    }

    #[test]
    fn reflection_knows_fabric_api() {
        assert!(reflection().is_ok());
        let text = String::from_utf8_lossy(sf_proto::v1::FILE_DESCRIPTOR_SET);
        assert!(text.contains("FabricApi") && text.contains("GetTenant"));
    }
}
