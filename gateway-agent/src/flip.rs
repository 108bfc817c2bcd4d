//! The host changes that make a VPC router forward or stop forwarding ([`Change`]), and their
//! executor on the host's netlink socket ([`apply`]).
//!
//! The failover controller and the fence build their flips as lists of changes (segment host
//! ends up or down, host routes replaced or deleted, in an order that matters: the anchor last
//! on activation, first on deactivation). [`apply`] sends a list as one pipeline of rtnetlink
//! requests, in order, each with its own outcome, and carries on past a failed one, as
//! `ip -force -batch` did before: a flip is never half-stopped by one missing route. A flip
//! of any number of routers is then one round of requests on an open socket, no process.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use sf_linux::netlink::l2::indexes_of;
use sf_linux::netlink::{link, Netlink, Request};

use crate::plan::Route;
use crate::plan6::Route6;

/// One change of the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    LinkUp(String),
    LinkDown(String),
    ReplaceRoute(Route),
    DelRoute(Route),
    ReplaceRoute6(Route6),
    DelRoute6(Route6),
}

/// `route VERB DST [via GW] [dev DEV]`.
fn route(
    f: &mut fmt::Formatter<'_>,
    verb: &str,
    dst: IpNet,
    via: Option<IpAddr>,
    dev: Option<&str>,
) -> fmt::Result {
    write!(f, "route {verb} {dst}")?;
    if let Some(v) = via {
        write!(f, " via {v}")?;
    }
    if let Some(d) = dev {
        write!(f, " dev {d}")?;
    }
    Ok(())
}

type RouteWords<'a> = (IpNet, Option<IpAddr>, Option<&'a str>);

fn v4(r: &Route) -> RouteWords<'_> {
    (r.dst.into(), r.via.map(IpAddr::from), r.dev.as_deref())
}

fn v6(r: &Route6) -> RouteWords<'_> {
    (r.dst.into(), r.via.map(IpAddr::from), r.dev.as_deref())
}

/// What `ip` would be told (`link set dev X up`, `route del DST via GW dev X`): for logs and
/// for reading a flip in a test.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, (dst, via, dev)) = match self {
            Change::LinkUp(l) => return write!(f, "link set dev {l} up"),
            Change::LinkDown(l) => return write!(f, "link set dev {l} down"),
            Change::ReplaceRoute(r) => ("replace", v4(r)),
            Change::DelRoute(r) => ("del", v4(r)),
            Change::ReplaceRoute6(r) => ("replace", v6(r)),
            Change::DelRoute6(r) => ("del", v6(r)),
        };
        route(f, verb, dst, via, dev)
    }
}

impl Change {
    /// The output device the change's route names, if any.
    fn dev(&self) -> Option<&str> {
        match self {
            Change::ReplaceRoute(r) | Change::DelRoute(r) => r.dev.as_deref(),
            Change::ReplaceRoute6(r) | Change::DelRoute6(r) => r.dev.as_deref(),
            Change::LinkUp(_) | Change::LinkDown(_) => None,
        }
    }

    fn is_deletion(&self) -> bool {
        matches!(self, Change::DelRoute(_) | Change::DelRoute6(_))
    }

    /// The request, given the ifindex of the route's device (links go by name).
    fn request(&self, oif: Option<u32>) -> Request {
        match self {
            Change::LinkUp(l) => link::set_up(l),
            Change::LinkDown(l) => link::set_down(l),
            Change::ReplaceRoute(r) => crate::exec::route(r, oif, true),
            Change::DelRoute(r) => crate::exec::route(r, oif, false),
            Change::ReplaceRoute6(r) => crate::exec::route6(r, oif, true),
            Change::DelRoute6(r) => crate::exec::route6(r, oif, false),
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes the kernel made.
    pub done: usize,
    /// Deletions of a route that was not there (nothing to do).
    pub absent: usize,
    /// Each failed change with the reason.
    pub failed: Vec<String>,
}

/// Applies `changes` in order on `nl` (the host's socket), carrying on past failures.
pub async fn apply(nl: &Netlink, changes: &[Change]) -> Applied {
    let devs: BTreeSet<String> = changes
        .iter()
        .filter_map(|c| c.dev().map(String::from))
        .collect();
    let index = indexes_of(nl, devs).await;
    let mut out = Applied::default();
    let mut sent = Vec::new();
    let mut requests = Vec::new();
    for c in changes {
        let oif = match c.dev().map(|d| &index[d]) {
            None => None,
            Some(Ok(i)) => Some(*i),
            Some(Err(e)) => {
                out.failed
                    .push(format!("{c}: no link {}: {e}", c.dev().unwrap_or("")));
                continue;
            }
        };
        sent.push(c);
        requests.push(c.request(oif));
    }
    for (c, r) in sent.into_iter().zip(nl.pipeline(requests).await) {
        match r {
            Ok(()) => out.done += 1,
            // ESRCH: no such route.
            Err(e) if c.is_deletion() && e.errno() == Some(libc::ESRCH) => out.absent += 1,
            Err(e) => out.failed.push(format!("{c}: {e}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_ip_would_be_told() {
        let r = Route {
            dst: "203.0.113.10/32".parse().unwrap(),
            via: Some("198.18.0.15".parse().unwrap()),
            dev: Some("gx7".into()),
        };
        assert_eq!(
            Change::ReplaceRoute(r.clone()).to_string(),
            "route replace 203.0.113.10/32 via 198.18.0.15 dev gx7"
        );
        assert_eq!(
            Change::DelRoute(Route { via: None, ..r }).to_string(),
            "route del 203.0.113.10/32 dev gx7"
        );
        let r6 = Route6 {
            dst: "2001:db8:100::/48".parse().unwrap(),
            via: Some("fe80::2".parse().unwrap()),
            dev: None,
        };
        assert_eq!(
            Change::DelRoute6(r6).to_string(),
            "route del 2001:db8:100::/48 via fe80::2"
        );
        assert_eq!(
            Change::LinkDown("g7v1".into()).to_string(),
            "link set dev g7v1 down"
        );
    }
}
