//! The public pools' blackhole routes ([`Underlay::blackhole`], [`Underlay::blackhole6`]):
//! one kernel `blackhole` route per pool, IPv4 or IPv6, tagged with our routing protocol number so that exactly our routes are observed
//! and removed. Switches announce them (FRR `network`, which needs the route in the RIB);
//! gateways only hold them, so a packet for a public address they no longer serve is dropped
//! instead of bouncing between gateway and leaf until its TTL runs out. A blackhole drops
//! silently: a client whose address is between gateways retransmits its SYN instead of
//! receiving an ICMP error, which makes Linux abort the connection attempt at once.
//!
//! [`Underlay::blackhole`]: sf_core::desired::Underlay::blackhole
//! [`Underlay::blackhole6`]: sf_core::desired::Underlay::blackhole6

use std::collections::BTreeSet;

use crate::converge::{OnFailure, Pass, Plan, Step};
use crate::netlink::mirror::MirrorState;
use crate::{links, run, DeviceError};
use ipnet::IpNet;
use sf_core::desired::Underlay;

/// Routing protocol number of StackFabric's blackhole routes (`ip route ... proto 245`;
/// FRR uses 186-196, the kernel below 20).
pub const PROTO: &str = "245";

/// Converges the blackhole routes to `wanted` (both families): additions first, then
/// removals.
pub async fn converge(pass: &mut Pass, wanted: &[IpNet]) {
    converge_from(pass, wanted, observe()).await
}

/// Converges the blackhole routes to `wanted` from routes already observed (a namespace's
/// [`MirrorState`], see [`of_mirror`]), without a process.
pub async fn converge_observed(pass: &mut Pass, wanted: &[IpNet], observed: BTreeSet<IpNet>) {
    converge_from(pass, wanted, async { Ok(observed) }).await
}

async fn converge_from(
    pass: &mut Pass,
    wanted: &[IpNet],
    observation: impl std::future::Future<Output = Result<BTreeSet<IpNet>, DeviceError>>,
) {
    let plan = |observed: &BTreeSet<IpNet>| {
        let (to_add, to_remove) = plan(wanted, observed);
        let steps = to_add.into_iter().map(Blackhole::Add);
        Plan::new(
            steps
                .chain(to_remove.into_iter().map(Blackhole::Remove))
                .collect(),
            vec![],
        )
    };
    pass.converge("blackhole routes", observation, plan, OnFailure::Continue)
        .await;
}

/// The blackhole routes `u` asks for: its IPv4 pools, then its IPv6 ones.
pub fn of_underlay(u: &Underlay) -> Vec<IpNet> {
    u.blackhole
        .iter()
        .map(|&n| IpNet::V4(n))
        .chain(u.blackhole6.iter().map(|&n| IpNet::V6(n)))
        .collect()
}

/// One change to the blackhole routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blackhole {
    Add(IpNet),
    Remove(IpNet),
}

impl Step for Blackhole {
    fn describe(&self) -> String {
        format!("{self:?}")
    }
    async fn execute(&self) -> Result<(), DeviceError> {
        match self {
            Blackhole::Add(net) => add(net).await,
            Blackhole::Remove(net) => remove(net).await,
        }
    }
}

/// What to add and remove to go from `observed` to `wanted`.
pub fn plan(wanted: &[IpNet], observed: &BTreeSet<IpNet>) -> (Vec<IpNet>, Vec<IpNet>) {
    let wanted: BTreeSet<IpNet> = wanted.iter().map(|n| n.trunc()).collect();
    (
        wanted.difference(observed).copied().collect(),
        observed.difference(&wanted).copied().collect(),
    )
}

/// Parses `ip -j [-6] route show type blackhole proto 245`.
pub fn parse(json: &str) -> Result<BTreeSet<IpNet>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("dst").and_then(|d| d.as_str()))
        .filter_map(|d| d.parse().ok())
        .collect())
}

/// Our blackhole routes of both families in a mirror's main table: what [`observe`] reads
/// with two `ip` processes.
pub fn of_mirror(m: &MirrorState) -> BTreeSet<IpNet> {
    use netlink_packet_route::route::RouteType;
    let ours = |p: crate::netlink::route::RouteProtocol, k: RouteType| {
        k == RouteType::BlackHole && u8::from(p).to_string() == PROTO
    };
    let v4 = m
        .routes_v4()
        .filter(|r| ours(r.protocol, r.kind))
        .map(|r| IpNet::V4(r.dst));
    let v6 = m
        .routes_v6()
        .filter(|r| ours(r.protocol, r.kind))
        .map(|r| IpNet::V6(r.dst));
    v4.chain(v6).collect()
}

/// Our blackhole routes of both families (`ip route show` lists one family at a time).
pub async fn observe() -> Result<BTreeSet<IpNet>, DeviceError> {
    let mut all = observe_family("-4").await?;
    all.extend(observe_family("-6").await?);
    Ok(all)
}

async fn observe_family(family: &str) -> Result<BTreeSet<IpNet>, DeviceError> {
    let out = run(
        "ip",
        &[
            "-j",
            family,
            "route",
            "show",
            "type",
            "blackhole",
            "proto",
            PROTO,
        ],
    )
    .await?;
    parse(if out.trim().is_empty() { "[]" } else { &out }).map_err(|detail| DeviceError::Parse {
        cmd: format!("ip -j {family} route show type blackhole"),
        detail,
    })
}

pub async fn add(net: &IpNet) -> Result<(), DeviceError> {
    links::ip(&[
        "route",
        "replace",
        "blackhole",
        &net.to_string(),
        "proto",
        PROTO,
    ])
    .await
}

pub async fn remove(net: &IpNet) -> Result<(), DeviceError> {
    links::ip(&[
        "route",
        "del",
        "blackhole",
        &net.to_string(),
        "proto",
        PROTO,
    ])
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_only_the_difference() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let observed = BTreeSet::from([n("203.0.113.0/24"), n("198.18.0.0/24")]);
        let (add, del) = plan(&[n("203.0.113.0/24"), n("192.0.2.5/24")], &observed);
        assert_eq!(
            add,
            vec![n("192.0.2.0/24")],
            "host bits are not part of a pool"
        );
        assert_eq!(del, vec![n("198.18.0.0/24")]);
        assert_eq!(
            plan(
                &[n("203.0.113.0/24")],
                &BTreeSet::from([n("203.0.113.0/24")])
            ),
            (vec![], vec![])
        );
    }

    #[test]
    fn plans_both_families_in_one_set() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let observed = BTreeSet::from([n("203.0.113.0/24"), n("2001:db8:200::/40")]);
        let (add, del) = plan(&[n("203.0.113.0/24"), n("2001:db8:100::1/40")], &observed);
        assert_eq!(add, vec![n("2001:db8:100::/40")]);
        assert_eq!(del, vec![n("2001:db8:200::/40")]);
    }

    #[test]
    fn parses_ip_json() {
        let got =
            parse(r#"[{"type":"blackhole","dst":"203.0.113.0/24","protocol":"245","flags":[]}]"#)
                .unwrap();
        assert_eq!(got, BTreeSet::from(["203.0.113.0/24".parse().unwrap()]));
        let got6 = parse(
            r#"[{"type":"blackhole","dst":"2001:db8:100::/40","protocol":"245","metric":1024,"flags":[],"pref":"medium"}]"#,
        )
        .unwrap();
        assert_eq!(got6, BTreeSet::from(["2001:db8:100::/40".parse().unwrap()]));
        assert!(parse("[]").unwrap().is_empty());
        assert!(parse("nope").is_err());
    }
}
