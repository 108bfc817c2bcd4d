//! `terraform-provider-stackfabric`: a Terraform provider (plugin protocol v6) for the
//! StackFabric coordinator's FabricApi.
//!
//! Started by Terraform as a go-plugin: it checks the magic cookie, serves gRPC on a loopback
//! port, and prints the handshake line `1|6|tcp|ADDR|grpc|CERT` on stdout. With AutoMTLS
//! (Terraform's default, PLUGIN_CLIENT_CERT set) the server presents a one-time self-signed
//! certificate that Terraform pins; the client's P-521 certificate is not verified (rustls' ring
//! provider has no P-521), so the loopback listener is authenticated one way only.
mod fabric;
mod msgpack;
mod provider;
mod schema;
mod schema_ops;

pub mod tf {
    tonic::include_proto!("tfplugin6");
}
mod plugin {
    tonic::include_proto!("plugin");
}
mod health {
    tonic::include_proto!("grpc.health.v1");
}

use base64::Engine;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
const COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

struct Controller(tokio::sync::mpsc::Sender<()>);

#[tonic::async_trait]
impl plugin::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _: Request<plugin::Empty>) -> Result<Response<plugin::Empty>, Status> {
        let _ = self.0.try_send(());
        Ok(Response::new(plugin::Empty {}))
    }
}

struct Health;

#[tonic::async_trait]
impl health::health_server::Health for Health {
    async fn check(
        &self,
        _: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        Ok(Response::new(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::Serving as i32,
        }))
    }
}

/// One-time server certificate for go-plugin AutoMTLS, shaped like go-plugin's own.
fn server_cert() -> anyhow::Result<(String, String, Vec<u8>)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "HashiCorp");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var(COOKIE_KEY).as_deref() != Ok(COOKIE) {
        eprintln!(
            "This binary is a plugin for Terraform. Configure it as provider \
             stackfabric/stackfabric and run terraform; it is not meant to be run directly."
        );
        std::process::exit(1);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);

    let mut builder = Server::builder();
    let mut cert_field = String::new();
    if std::env::var("PLUGIN_CLIENT_CERT").is_ok_and(|c| !c.is_empty()) {
        let (cert_pem, key_pem, der) = server_cert()?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)))?;
        cert_field = base64::engine::general_purpose::STANDARD_NO_PAD.encode(der);
    }
    let router = builder
        .add_service(tf::provider_server::ProviderServer::new(
            provider::StackFabric::default(),
        ))
        .add_service(plugin::grpc_controller_server::GrpcControllerServer::new(
            Controller(stop_tx),
        ))
        .add_service(health::health_server::HealthServer::new(Health));

    println!("1|6|tcp|{addr}|grpc|{cert_field}");
    use std::io::Write;
    std::io::stdout().flush()?;

    router
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
            let _ = stop_rx.recv().await;
        })
        .await?;
    Ok(())
}
