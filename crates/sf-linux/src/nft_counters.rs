//! Reads the kernel's per-rule counters from `nft -j -t list table …`: every rule with a
//! `counter` statement becomes a [`RuleSample`] named by its comment (`ingress 10`,
//! `snat`, `lb 203.0.113.20:80`), or by its handle when it has none. Terse (`-t`): the
//! rules' counters without the sets' and maps' elements, which are most of a table with load
//! balancers (a 65,537-slot Maglev map: 1.5 MB of JSON without `-t`, 744 bytes with it).

use sf_metrics::RuleSample;

use crate::{run, DeviceError};

/// Parses nft's JSON listing; `scope` labels where the table lives.
pub fn parse(json: &str, scope: &str) -> Result<Vec<RuleSample>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for item in v
        .get("nftables")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
    {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(counter) = rule
            .get("expr")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .find_map(|e| e.get("counter"))
        else {
            continue;
        };
        let num = |k: &str| counter.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
        let name = match rule.get("comment").and_then(|c| c.as_str()) {
            Some(c) => c.to_string(),
            None => format!(
                "handle {}",
                rule.get("handle").and_then(|h| h.as_u64()).unwrap_or(0)
            ),
        };
        out.push(RuleSample {
            scope: scope.to_string(),
            chain: rule
                .get("chain")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string(),
            rule: name,
            packets: num("packets"),
            bytes: num("bytes"),
        });
    }
    Ok(out)
}

/// Counters of table `family name`, run through `prefix` (e.g. `ip netns exec NS`); an
/// absent table has none.
pub async fn read(
    prefix: &[&str],
    family: &str,
    table: &str,
    scope: &str,
) -> Result<Vec<RuleSample>, DeviceError> {
    let (program, mut args) = match prefix.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => ("nft", Vec::new()),
    };
    if !prefix.is_empty() {
        args.push("nft");
    }
    args.extend(["-j", "-t", "list", "table", family, table]);
    samples(run(program, &args).await, family, table, scope)
}

/// Counters of table `family name` in named network namespace `ns`, `nft` started inside
/// it (no `ip netns exec` process, see [`crate::run_in_netns`]); an absent table has none.
pub async fn read_in_netns(
    ns: &str,
    family: &str,
    table: &str,
    scope: &str,
) -> Result<Vec<RuleSample>, DeviceError> {
    let args = ["-j", "-t", "list", "table", family, table];
    samples(
        crate::run_in_netns(ns, "nft", &args).await,
        family,
        table,
        scope,
    )
}

fn samples(
    listing: Result<String, DeviceError>,
    family: &str,
    table: &str,
    scope: &str,
) -> Result<Vec<RuleSample>, DeviceError> {
    match listing {
        Ok(out) => parse(&out, scope).map_err(|detail| DeviceError::Parse {
            cmd: format!("nft -j -t list table {family} {table}"),
            detail,
        }),
        Err(e) if e.to_string().contains("No such file or directory") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_with_counters_become_samples() {
        let json = r#"{"nftables": [
          {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"table": {"family": "ip", "name": "stackfabric", "handle": 1}},
          {"chain": {"family": "ip", "table": "stackfabric", "name": "postrouting", "handle": 2}},
          {"rule": {"family": "ip", "table": "stackfabric", "chain": "postrouting", "handle": 7,
                    "comment": "snat",
                    "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "transit"}},
                             {"counter": {"packets": 12, "bytes": 1008}},
                             {"snat": {"addr": "203.0.113.10"}}]}},
          {"rule": {"family": "ip", "table": "stackfabric", "chain": "forward", "handle": 9,
                    "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}},
          {"rule": {"family": "ip", "table": "stackfabric", "chain": "forward", "handle": 10,
                    "expr": [{"accept": null}]}}
        ]}"#;
        let got = parse(json, "vpc3").unwrap();
        assert_eq!(
            got,
            vec![
                RuleSample {
                    scope: "vpc3".into(),
                    chain: "postrouting".into(),
                    rule: "snat".into(),
                    packets: 12,
                    bytes: 1008,
                },
                RuleSample {
                    scope: "vpc3".into(),
                    chain: "forward".into(),
                    rule: "handle 9".into(),
                    packets: 3,
                    bytes: 180,
                },
            ]
        );
        assert!(parse("{", "x").is_err());
    }
}
