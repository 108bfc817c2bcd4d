//! Property tests of the REST decoders ([`super::wire`], [`super::auth`]'s form and cookie
//! readers): arbitrary JSON built from the keys CloudStack sends never makes a decoder panic,
//! every rejection is a 400 naming the field (`invalid <field>: ...`), and the round trips
//! that exist hold (form encoding, StackFabric names).

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::auth;
use super::wire::*;

/// Keys the decoders read, plus a few they do not.
const KEYS: &[&str] = &[
    "name",
    "prefix",
    "purpose",
    "defaultGateway",
    "vxlanID",
    "gateways",
    "tags",
    "state",
    "action",
    "protocol",
    "sourceAddress",
    "sourcePort",
    "destinationAddress",
    "destinationPort",
    "dnatToIP",
    "dnatToPort",
    "snatToIP",
    "healthCheck",
    "status",
    "automatic",
    "ipFamily",
    "backend",
    "backends",
    "backendIps",
    "ip",
    "port",
    "frontendPort",
    "frontendIp",
    "proto",
    "src_prefix",
    "dst_prefix",
    "src_port_from",
    "src_port_to",
    "dst_port_from",
    "dst_port_to",
    "established",
    "comment",
    "nextHop",
    "next_hop",
    "stateStatus",
    "vpc",
    "id",
    "site",
    "x",
];

/// Strings that hit the decoders' branches: addresses, prefixes, enum words, junk.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "10.0.0.0/24",
            "10.0.0.1/24",
            "10.0.0.1",
            "203.0.113.5/32",
            "0.0.0.0/0",
            "::1/128",
            "10.0.0.0/33",
            "TCP",
            "udp",
            "ALL",
            "SNAT",
            "DNAT",
            "permit",
            "deny",
            "HTTP",
            "None",
            "enable",
            "disabled",
            "common",
            "nat",
            "load-balancer",
            "80",
            "1-65535",
            "0",
            "",
            "10.0.0.1:80",
            "IPv6",
            "true",
        ])
        .prop_map(String::from),
        ".{0,24}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..70000).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..4).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// A body object with up to 14 of [`KEYS`].
fn body() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(KEYS), json(), 0..14).prop_map(|m| {
        let o: Map<String, Value> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Value::Object(o)
    })
}

/// A rejection is a 400 whose message names the field, or says what is malformed.
fn named<T>(r: ApiResult<T>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert_eq!(
            e.status,
            axum::http::StatusCode::BAD_REQUEST,
            "{}",
            e.message
        );
        let (head, rest) = e.message.split_once(": ").unwrap_or(("", ""));
        prop_assert!(
            head.starts_with("invalid ") && head.len() > 8 && !rest.is_empty(),
            "message names no field: {:?}",
            e.message
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn specs_never_panic_and_name_the_field(v in body()) {
        named(alloc_spec(&v))?;
        named(subnet_spec(&v))?;
        named(vnet_spec(&v))?;
        named(lb_spec(&v))?;
        named(acl_spec(&v))?;
        named(route_spec(&v))?;
        named(ip6_spec(&v, true))?;
        named(ip6_spec(&v, false))?;
        match nat_spec(&v) {
            Ok(s) => named(nat_kind(&s))?,
            e => named(e)?,
        }
    }

    #[test]
    fn lenient_readers_never_panic(v in body(), key in prop::sample::select(KEYS)) {
        let _ = get_ref(&v, key);
        let _ = opt_str(&v, key);
        let _ = opt_bool(&v, key);
        named(opt_u64(&v, key))?;
        named(parse_port(&v, key))?;
        named(req_str(&v, key))?;
    }

    #[test]
    fn addresses(s in text()) {
        named(parse_net("f", &s))?;
        named(parse_prefix("f", &s))?;
        named(parse_ip("f", &s))?;
        if let Ok(ip) = parse_ip("f", &s) {
            // What parses renders back as the same address.
            prop_assert_eq!(parse_ip("f", &ip.to_string()).unwrap(), ip);
        }
    }

    #[test]
    fn bodies_are_json_objects_or_a_400(bytes in prop::collection::vec(any::<u8>(), 0..64),
                                        v in json()) {
        let _ = parse_body(&bytes).map_err(|e| assert_eq!(e.status.as_u16(), 400));
        let text = serde_json::to_vec(&v).unwrap();
        prop_assert_eq!(parse_body(&text).is_ok(), v.is_object());
    }

    #[test]
    fn names_are_always_valid_and_kept_when_they_can_be(n in ".{0,80}", id in any::<u64>()) {
        let s = sf_name(&n, id, |_| false);
        prop_assert!(sf_core::validate::validate_name("n", &s).is_ok(), "{s:?}");
        if sf_core::validate::validate_name("n", &n).is_ok() {
            prop_assert_eq!(&s, &n);
        }
        // A taken name gets the id suffix, still valid, never the taken one.
        let t = sf_name(&n, id, |x| x == n);
        prop_assert!(sf_core::validate::validate_name("n", &t).is_ok(), "{t:?}");
        prop_assert_ne!(t, n);
    }

    #[test]
    fn forms_round_trip(k in "[a-z]{1,8}", v in ".{0,40}") {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    b' ' => "+".into(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let f = auth::parse_form(&format!("x=1&{k}={}", enc(&v)));
        prop_assert_eq!(f.get(&k), Some(&v));
        let cookie = format!("a=1; {}={}; b=2", auth::COOKIE, enc(&v).replace(';', ""));
        let _ = auth::cookie_value(&cookie, auth::COOKIE);
    }

    #[test]
    fn forms_never_panic(s in ".{0,80}") {
        let _ = auth::parse_form(&s);
        let _ = auth::cookie_value(&s, auth::COOKIE);
    }
}
