//! Cutting translated flows the router no longer serves. The kernel keeps a connection's NAT
//! binding in conntrack for as long as the connection lives, so without this a deleted port
//! forward or static NAT keeps forwarding its established connections, and a load balancer
//! keeps sending a connection to a backend that went down or was removed. After a router's
//! rules are applied, the DNAT targets it had before and no longer has are cut: their
//! conntrack entries are deleted (by filter, over ctnetlink in the VPC namespace:
//! [`sf_linux::netlink::conntrack`], what `conntrack -D` does without the process), so the next
//! packet of such a connection meets the current rules (no translation: the router answers
//! with a reset; a load balancer: another backend, which resets it). This is what
//! kube-proxy does for UDP endpoints and IPVS's `expire_nodest_conn` for removed backends.
//!
//! [`targets`] and [`cuts`] are pure; [`cut`] runs the commands. Flows newly denied by a
//! north-south ACL are cut by the ruleset itself (see `nft`'s generation mark).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use sf_core::desired::{L4Protocol, LbBackend, LoadBalancer, VpcRouter, VpcRouter6};
use sf_linux::netlink::conntrack::{Conntrack, Filter};
use sf_linux::netlink::netns;
use sf_linux::DeviceError;
use tracing::debug;

use crate::nft;

/// One destination translation the router performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Port forward or load balancer backend: (protocol, public address and port) → backend
    /// (IPv6 for the load balancers of the router's IPv6 side).
    Port {
        protocol: L4Protocol,
        public: (IpAddr, u16),
        private: (IpAddr, u16),
    },
    /// Static NAT: every protocol, both ways.
    Static { public: Ipv4Addr, private: Ipv4Addr },
}

/// What router `r` translates now: its port forwards, its static NATs and, per load
/// balancer (IPv6 ones of `r6` too), the backends `up` says receive new connections.
pub fn targets(
    r: &VpcRouter,
    r6: Option<&VpcRouter6>,
    up: &dyn Fn(&LoadBalancer, &LbBackend) -> bool,
) -> BTreeSet<Target> {
    let mut out: BTreeSet<Target> = r
        .port_forwards
        .iter()
        .map(|p| Target::Port {
            protocol: p.protocol,
            public: (p.public_ip.into(), p.public_port),
            private: (p.private_ip.into(), p.private_port),
        })
        .collect();
    out.extend(r.static_nats.iter().map(|s| Target::Static {
        public: s.public_ip,
        private: s.private_ip,
    }));
    let lbs6 = r6.map(crate::nft6::load_balancers6).unwrap_or_default();
    for lb in nft::load_balancers(r).into_iter().chain(lbs6) {
        for b in nft::lb_backends(lb)
            .into_iter()
            .filter(|b| b.weight > 0 && up(lb, b))
        {
            out.insert(Target::Port {
                protocol: lb.protocol,
                public: (lb.vip, lb.port),
                private: (b.ip, b.port),
            });
        }
    }
    out
}

/// The conntrack filters cutting the flows of targets in `before` but not in `after`.
pub fn cuts(before: &BTreeSet<Target>, after: &BTreeSet<Target>) -> Vec<Filter> {
    let mut out = Vec::new();
    for t in before.difference(after) {
        match *t {
            Target::Port {
                protocol,
                public,
                private,
            } => out.push(Filter {
                ipv6: public.0.is_ipv6(),
                proto: Some(match protocol {
                    L4Protocol::Tcp => libc::IPPROTO_TCP as u8,
                    L4Protocol::Udp => libc::IPPROTO_UDP as u8,
                }),
                orig_dst: Some(public.0),
                orig_dport: Some(public.1),
                reply_src: Some(private.0),
                reply_sport: Some(private.1),
                ..Filter::default()
            }),
            Target::Static { public, private } => {
                // Connections to the public address, and the VM's own connections that left
                // through it.
                out.push(Filter {
                    orig_dst: Some(public.into()),
                    reply_src: Some(private.into()),
                    ..Filter::default()
                });
                out.push(Filter {
                    orig_src: Some(private.into()),
                    reply_dst: Some(public.into()),
                    ..Filter::default()
                });
            }
        }
    }
    out
}

/// Deletes the conntrack entries matching any of `filters` in namespace `ns` (one ctnetlink
/// dump per family, on a thread of its own: the socket calls block).
pub async fn cut(ns: &str, filters: &[Filter]) -> Result<(), DeviceError> {
    let path = netns::path_of(ns);
    let filters = filters.to_vec();
    let what = format!("delete conntrack entries in {ns}");
    let deleted = tokio::task::spawn_blocking(move || {
        netns::within(&path, || Conntrack::open()?.delete(&filters))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|entered| entered.and_then(|(deleted, _)| deleted));
    match deleted {
        Ok(n) => {
            debug!(%ns, deleted = n, "conntrack entries deleted");
            Ok(())
        }
        Err(source) => Err(DeviceError::Spawn { cmd: what, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::desired::{HealthCheck, PortForward, StaticNat};

    fn router() -> VpcRouter {
        serde_json::from_value(serde_json::json!({
            "tenant": "demo", "vpc": "blue", "id": 1, "cidr": "10.10.0.0/16",
            "mac": "02:00:00:00:00:01", "tiers": [], "routes": [],
            "port_forwards": [], "static_nats": [], "load_balancers": []
        }))
        .expect("a router")
    }

    fn lb(backends: &[(&str, &str, u16)]) -> LoadBalancer {
        LoadBalancer {
            name: "web".into(),
            vip: "203.0.113.20".parse().unwrap(),
            protocol: L4Protocol::Tcp,
            port: 80,
            backends: backends
                .iter()
                .map(|(n, ip, port)| LbBackend {
                    name: n.to_string(),
                    ip: ip.parse().unwrap(),
                    port: *port,
                    weight: 1,
                })
                .collect(),
            health: HealthCheck::None,
            table_size: 251,
            public: true,
            source_cidrs: vec![],
            peer_down: Default::default(),
        }
    }

    /// Removing a port forward, changing one's target, removing a static NAT and a backend
    /// going down each cut exactly their flows; what stays is not touched.
    #[test]
    fn cuts_are_what_is_no_longer_translated() {
        let mut before = router();
        before.port_forwards = vec![
            PortForward {
                protocol: L4Protocol::Tcp,
                public_ip: "203.0.113.11".parse().unwrap(),
                public_port: 8080,
                private_ip: "10.10.1.12".parse().unwrap(),
                private_port: 80,
            },
            PortForward {
                protocol: L4Protocol::Udp,
                public_ip: "203.0.113.11".parse().unwrap(),
                public_port: 53,
                private_ip: "10.10.1.13".parse().unwrap(),
                private_port: 53,
            },
        ];
        before.static_nats = vec![StaticNat {
            public_ip: "203.0.113.12".parse().unwrap(),
            private_ip: "10.10.1.11".parse().unwrap(),
        }];
        before.load_balancers = vec![lb(&[("a", "10.10.1.21", 80), ("b", "10.10.1.22", 80)])];
        let all_up = |_: &LoadBalancer, _: &LbBackend| true;
        let old = targets(&before, None, &all_up);
        assert_eq!(old.len(), 5);
        assert!(
            cuts(&old, &targets(&before, None, &all_up)).is_empty(),
            "no change, no cut"
        );

        let mut after = before.clone();
        after.port_forwards[0].private_port = 8000; // moved: the old target's flows go
        after.static_nats.clear();
        let b_down = |_: &LoadBalancer, b: &LbBackend| b.name != "b";
        let c = cuts(&old, &targets(&after, None, &b_down));
        let lines: Vec<String> = c.iter().map(Filter::to_string).collect();
        assert_eq!(
            lines,
            [
                "-p tcp --orig-dst 203.0.113.11 --dport 8080 --reply-src 10.10.1.12 --reply-port-src 80",
                "-p tcp --orig-dst 203.0.113.20 --dport 80 --reply-src 10.10.1.22 --reply-port-src 80",
                "--orig-dst 203.0.113.12 --reply-src 10.10.1.11",
                "--orig-src 10.10.1.11 --reply-dst 203.0.113.12",
            ]
        );
    }

    /// An IPv6 load balancer's lost backend is cut in the IPv6 conntrack table (conntrack
    /// lists IPv4 only unless told the family).
    #[test]
    fn ipv6_backends_are_cut_with_the_family() {
        let r = router();
        let r6 = crate::plan6::tests::lb6_example(&crate::nft::example());
        let all_up = |_: &LoadBalancer, _: &LbBackend| true;
        let old = targets(&r, Some(&r6), &all_up);
        assert_eq!(old.len(), 3);
        let down = |_: &LoadBalancer, b: &LbBackend| b.name != "[2001:db8:100:1::22]:80";
        let lines: Vec<String> = cuts(&old, &targets(&r, Some(&r6), &down))
            .iter()
            .map(Filter::to_string)
            .collect();
        assert_eq!(
            lines,
            ["-f ipv6 -p tcp --orig-dst 2001:db8:1ff::80 --dport 80 --reply-src 2001:db8:100:1::22 --reply-port-src 80"]
        );
    }
}
