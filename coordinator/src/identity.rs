//! Who is calling. Agents are identified by the common name of the client certificate they
//! presented in the mTLS handshake (issued per node by the fabric's CA); API callers by a
//! bearer token from the coordinator's token file. Nothing a client *says* about itself is
//! trusted beyond what these prove.

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
    node_of_certificate(leaf.as_ref())
}

/// The node a client certificate names (its subject common name), if the certificate is meant
/// for TLS client authentication. The TLS layer already refuses a certificate whose extended
/// key usage leaves out clientAuth; one without the extension at all (usable for anything)
/// is refused here, so only certificates issued for nodes name nodes.
pub fn node_of_certificate(der: &[u8]) -> Result<String, Status> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
    let for_clients = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.client_auth);
    if !for_clients {
        return Err(Status::unauthenticated(
            "the client certificate's extendedKeyUsage does not name clientAuth",
        ));
    }
    common_name(der).ok_or_else(|| Status::unauthenticated("client certificate has no common name"))
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// What a bearer token may do on the northbound API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only: `List*` and `Get*` (fleet status, monitoring, `sfctl get`).
    Reader,
    /// Everything.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// The role a FabricApi method needs: reads (`List*`, `Get*`) need a reader, anything else an
/// admin. A request whose method is unknown needs an admin.
pub fn role_needed(method: Option<&str>) -> Role {
    match method {
        Some(m) if m.starts_with("List") || m.starts_with("Get") => Role::Reader,
        _ => Role::Admin,
    }
}

/// The gRPC method a request calls (`CreateVpc`), put in its extensions by [`tag_method`]: a
/// unary handler sees only its message and metadata, not the path.
#[derive(Debug, Clone)]
pub struct ApiMethod(pub String);

/// Records the called method in the request's extensions (a `tower` map over every request
/// the gRPC server takes, before routing).
pub fn tag_method<B>(mut req: http::Request<B>) -> http::Request<B> {
    let method = req.uri().path().rsplit('/').next().unwrap_or_default();
    let tag = ApiMethod(method.to_string());
    req.extensions_mut().insert(tag);
    req
}

/// A caller the coordinator authenticated itself before calling the API in-process (the web
/// console's session, [`crate::console`]), with the role its login proved. Only server code
/// can put it in a request's extensions: nothing on the wire becomes an extension.
#[derive(Debug, Clone, Copy)]
pub struct Preauthorized(pub Role);

/// Messages tonic's codec gives a request it cannot decode (undecodable protobuf, broken
/// framing), percent-decoded.
const UNDECODABLE: [&str; 3] = [
    "failed to decode protobuf message",
    "protocol error",
    "unexpected eof decoding stream",
];

/// tonic answers a request whose protobuf it cannot decode with INTERNAL, as if the server
/// had failed; it is the client's bad input. Rewrites such a trailers-only answer to
/// INVALID_ARGUMENT (a `tower` map over every response of the gRPC server).
pub fn undecodable_is_invalid_argument<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    if h.get("grpc-status").map(|v| v.as_bytes()) != Some(b"13") {
        return resp;
    }
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode(m).to_lowercase())
        .unwrap_or_default();
    if UNDECODABLE.iter().any(|p| message.starts_with(p)) {
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    resp
}

/// `%XX` escapes of a grpc-message header (the spaces are what matters here).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A line of the token file that is not `<token> [admin|reader]`.
#[derive(Debug, thiserror::Error)]
#[error("token file line {line}: {why}")]
pub struct TokenFileError {
    pub line: usize,
    pub why: String,
}

/// Bearer tokens accepted by the northbound API, with their roles. Only SHA-256 digests are
/// kept, and a presented token is compared with every one of them in constant time, so
/// neither the comparison nor the token's length shows in the answer's timing.
#[derive(Clone, Default)]
pub struct Tokens(Vec<([u8; 32], Role)>);

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// One token per non-empty line, optionally followed by its role (`admin`, the default,
    /// or `reader`); lines starting with '#' are comments.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let token = fields.next().unwrap_or_default();
            let role = match (fields.next(), fields.next()) {
                (None, _) => Role::Admin,
                (Some(r), None) => Role::parse(r).ok_or_else(|| TokenFileError {
                    line: i + 1,
                    why: format!("role {r:?} is not admin or reader"),
                })?,
                (Some(_), Some(_)) => {
                    return Err(TokenFileError {
                        line: i + 1,
                        why: "expected '<token> [admin|reader]'".into(),
                    })
                }
            };
            tokens.push((digest(token), role));
        }
        Ok(Tokens(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The role of a presented token, compared in constant time with every entry.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        use subtle::ConstantTimeEq;
        let presented = digest(token);
        let mut found = None;
        for (d, role) in &self.0 {
            if bool::from(d.ct_eq(&presented)) {
                found = found.max(Some(*role));
            }
        }
        found
    }

    /// Checks the `authorization: Bearer <token>` metadata and that the token's role may call
    /// the request's method ([`ApiMethod`]).
    /// A request carrying [`Preauthorized`] is checked with that role instead.
    pub fn check<T>(&self, req: &Request<T>) -> Result<Role, Status> {
        if let Some(Preauthorized(role)) = req.extensions().get::<Preauthorized>() {
            return Self::permit(*role, req);
        }
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
        let role = self
            .role_of(token.trim())
            .ok_or_else(|| Status::unauthenticated("invalid credential"))?;
        Self::permit(role, req)
    }

    /// Whether `role` may call the request's method.
    fn permit<T>(role: Role, req: &Request<T>) -> Result<Role, Status> {
        let method = req.extensions().get::<ApiMethod>().map(|m| m.0.as_str());
        let needed = role_needed(method);
        if role < needed {
            return Err(Status::permission_denied(format!(
                "this token has the {} role; {} needs {}",
                role.as_str(),
                method.unwrap_or("this call"),
                needed.as_str()
            )));
        }
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str, method: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        if let Some(m) = method {
            r.extensions_mut().insert(ApiMethod(m.into()));
        }
        r
    }

    #[test]
    fn tokens_accept_only_listed_bearers() {
        let t = Tokens::parse("# admin\nsecret-1\n\n  secret-2  \n").unwrap();
        assert!(t.check(&bearer("secret-2", Some("CreateVpc"))).is_ok());
        assert!(t.check(&bearer("nope", Some("ListVpcs"))).is_err());
        assert!(t.check(&bearer("secret", Some("ListVpcs"))).is_err());
        let mut basic = Request::new(());
        basic
            .metadata_mut()
            .insert("authorization", "Basic secret-1".parse().unwrap());
        assert!(t.check(&basic).is_err());
        assert!(t.check(&Request::new(())).is_err());
    }

    #[test]
    fn a_reader_token_reads_and_cannot_write() {
        let t = Tokens::parse("admin-token admin\nread-token reader\n").unwrap();
        for m in [
            "ListVpcs",
            "GetFleetStatus",
            "GetLoadBalancer",
            "ListPlacements",
        ] {
            assert_eq!(
                t.check(&bearer("read-token", Some(m))).unwrap(),
                Role::Reader
            );
        }
        for m in ["CreateVpc", "DeleteTenant", "ApplyAclList", "DrainGateway"] {
            let e = t.check(&bearer("read-token", Some(m))).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{m}");
            assert!(e.message().contains(m), "{}", e.message());
            assert_eq!(
                t.check(&bearer("admin-token", Some(m))).unwrap(),
                Role::Admin
            );
        }
        // A request whose method is not known needs an admin.
        assert!(t.check(&bearer("read-token", None)).is_err());
        assert!(t.check(&bearer("admin-token", None)).is_ok());
    }

    #[test]
    fn a_preauthorized_request_keeps_its_roles_limits() {
        let t = Tokens::parse("admin-token").unwrap();
        let mut r = Request::new(());
        r.extensions_mut().insert(ApiMethod("CreateVpc".into()));
        r.extensions_mut().insert(Preauthorized(Role::Reader));
        assert_eq!(
            t.check(&r).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        r.extensions_mut().insert(Preauthorized(Role::Admin));
        assert_eq!(t.check(&r).unwrap(), Role::Admin);
    }

    #[test]
    fn the_token_file_names_a_bad_line() {
        let e = Tokens::parse("ok\nbad owner\n").err().unwrap();
        assert_eq!(e.line, 2);
        assert!(Tokens::parse("a b c").is_err());
    }

    fn certificate(name: &str, eku: Option<rcgen::ExtendedKeyUsagePurpose>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = eku.into_iter().collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn only_client_certificates_name_a_node() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        assert_eq!(
            node_of_certificate(&certificate("hv1", Some(ClientAuth))).unwrap(),
            "hv1"
        );
        for eku in [None, Some(ServerAuth)] {
            let e = node_of_certificate(&certificate("hv1", eku)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(e.message().contains("clientAuth"), "{}", e.message());
        }
    }

    #[test]
    fn the_method_is_read_off_the_path() {
        let req = http::Request::builder()
            .uri("/stackfabric.v1.FabricApi/ListVpcs")
            .body(())
            .unwrap();
        let req = tag_method(req);
        assert_eq!(req.extensions().get::<ApiMethod>().unwrap().0, "ListVpcs");
    }

    #[test]
    fn undecodable_requests_are_the_clients_error() {
        let answer = |status: &str, message: &str| {
            let r = http::Response::builder()
                .header("grpc-status", status)
                .header("grpc-message", message)
                .body(())
                .unwrap();
            let r = undecodable_is_invalid_argument(r);
            r.headers()["grpc-status"].to_str().unwrap().to_string()
        };
        assert_eq!(
            answer(
                "13",
                "failed%20to%20decode%20Protobuf%20message:%20invalid%20wire%20type"
            ),
            "3"
        );
        assert_eq!(answer("13", "Unexpected EOF decoding stream."), "3");
        assert_eq!(
            answer("13", "etcd: connection refused"),
            "13",
            "a real server fault stays"
        );
        assert_eq!(answer("5", "failed to decode Protobuf message"), "5");
    }
}
