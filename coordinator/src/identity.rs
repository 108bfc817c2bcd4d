//! Who is calling. Agents are identified by the common name of the client certificate they
//! presented in the mTLS handshake (issued per node by the fabric's CA); API callers by a
//! bearer token from the coordinator's token file. Nothing a client *says* about itself is
//! trusted beyond what these prove.

use std::collections::HashSet;

use tonic::{Request, Status};
use x509_parser::prelude::*;

/// The node name proven by the peer's certificate, or `Unauthenticated`.
pub fn peer_node<T>(req: &Request<T>) -> Result<String, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required for AgentSync"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    common_name(leaf.as_ref())
        .ok_or_else(|| Status::unauthenticated("client certificate has no common name"))
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Bearer tokens accepted by the northbound API.
#[derive(Clone, Default)]
pub struct Tokens(HashSet<String>);

impl Tokens {
    /// One token per non-empty line; lines starting with '#' are comments.
    pub fn parse(text: &str) -> Self {
        Tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the `authorization: Bearer <token>` metadata.
    pub fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("missing credential: send 'authorization: Bearer <token>'")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
        if self.0.contains(token.trim()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid credential"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_accept_only_listed_bearers() {
        let t = Tokens::parse("# admin\nsecret-1\n\n  secret-2  \n");
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer secret-2".parse().unwrap());
        assert!(t.check(&ok).is_ok());
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        assert!(t.check(&bad).is_err());
        let mut basic = Request::new(());
        basic
            .metadata_mut()
            .insert("authorization", "Basic secret-1".parse().unwrap());
        assert!(t.check(&basic).is_err());
        assert!(t.check(&Request::new(())).is_err());
    }
}
