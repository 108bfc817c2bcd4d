//! The coordinator's gRPC FabricApi as the benchmark calls it: TLS with the run's CA and the
//! bearer token, like `sfctl`.

use std::path::Path;

use sf_proto::v1 as pb;
use sf_proto::v1::fabric_api_client::FabricApiClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub type Api = FabricApiClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> tonic::Result<tonic::Request<()>> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub async fn connect(endpoint: &str, ca: &Path, token: &str) -> anyhow::Result<Api> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .domain_name("coordinator");
    let channel = Channel::from_shared(endpoint.to_string())?
        .tls_config(tls)?
        .connect()
        .await?;
    let value = format!("Bearer {token}").parse()?;
    Ok(FabricApiClient::with_interceptor(channel, Bearer(value)))
}

pub fn node(name: &str, i: usize, site: &str) -> pb::Node {
    pb::Node {
        name: name.into(),
        role: "hypervisor".into(),
        site: site.into(),
        asn: 4_200_000_000 + i as u32,
        loopback: format!("10.{}.{}.{}", 128 + i / 65_536, (i / 256) % 256, i % 256),
        fabric_ports: vec!["eth0".into()],
    }
}

pub fn port(
    tenant: &str,
    vpc: &str,
    network: &str,
    name: &str,
    node: &str,
    ip: String,
) -> pb::PortBinding {
    pb::PortBinding {
        tenant: tenant.into(),
        name: name.into(),
        vpc: vpc.into(),
        network: network.into(),
        node: node.into(),
        ip,
        ..Default::default()
    }
}
