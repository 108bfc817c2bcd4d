//! The subset of MessagePack that Terraform's cty encoding uses: nil, bool, integers, floats,
//! strings, arrays, string-keyed maps, and extension values (cty's "unknown"). Values are kept
//! in a small tree so the provider can mark computed attributes unknown in a plan.
use std::collections::BTreeMap;

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// A value not known until apply (msgpack extension; cty writes fixext1 type 0).
    Unknown,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Float(f) if *f >= 0.0 && f.fract() == 0.0 => Some(*f as u64),
            Value::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            Value::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    /// Converts a JSON document (Terraform's stored state) into a value.
    pub fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    enc(v, &mut out);
    out
}

fn enc_len(out: &mut Vec<u8>, n: usize, fix: u8, fix_max: usize, c16: u8, c32: u8) {
    if n <= fix_max {
        out.push(fix | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(c16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(c32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn enc_str(s: &str, out: &mut Vec<u8>) {
    let n = s.len();
    if n <= 31 {
        out.push(0xa0 | n as u8);
    } else if n <= 255 {
        out.push(0xd9);
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn enc(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => {
            if (0..=127).contains(i) {
                out.push(*i as u8);
            } else if (-32..0).contains(i) {
                out.push(*i as i8 as u8);
            } else {
                out.push(0xd3);
                out.extend_from_slice(&i.to_be_bytes());
            }
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => enc_str(s, out),
        Value::List(items) => {
            enc_len(out, items.len(), 0x90, 15, 0xdc, 0xdd);
            for i in items {
                enc(i, out);
            }
        }
        Value::Map(m) => {
            enc_len(out, m.len(), 0x80, 15, 0xde, 0xdf);
            for (k, v) in m {
                enc_str(k, out);
                enc(v, out);
            }
        }
        Value::Unknown => out.extend_from_slice(&[0xd4, 0, 0]),
    }
}

pub fn decode(buf: &[u8]) -> Result<Value> {
    let mut pos = 0;
    let v = dec(buf, &mut pos)?;
    Ok(v)
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8]> {
    if *pos + n > buf.len() {
        bail!("msgpack: truncated input");
    }
    let s = &buf[*pos..*pos + n];
    *pos += n;
    Ok(s)
}

fn be(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64> {
    Ok(take(buf, pos, n)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | *b as u64))
}

fn dec_str(buf: &[u8], pos: &mut usize, n: usize) -> Result<Value> {
    Ok(Value::Str(
        String::from_utf8_lossy(take(buf, pos, n)?).into_owned(),
    ))
}

fn dec_list(buf: &[u8], pos: &mut usize, n: usize) -> Result<Value> {
    let mut v = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        v.push(dec(buf, pos)?);
    }
    Ok(Value::List(v))
}

fn dec_map(buf: &[u8], pos: &mut usize, n: usize) -> Result<Value> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let k = match dec(buf, pos)? {
            Value::Str(s) => s,
            other => bail!("msgpack: non-string map key {other:?}"),
        };
        m.insert(k, dec(buf, pos)?);
    }
    Ok(Value::Map(m))
}

fn dec(buf: &[u8], pos: &mut usize) -> Result<Value> {
    let b = take(buf, pos, 1)?[0];
    Ok(match b {
        0x00..=0x7f => Value::Int(b as i64),
        0x80..=0x8f => return dec_map(buf, pos, (b & 0x0f) as usize),
        0x90..=0x9f => return dec_list(buf, pos, (b & 0x0f) as usize),
        0xa0..=0xbf => return dec_str(buf, pos, (b & 0x1f) as usize),
        0xc0 => Value::Null,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xc4..=0xc6 => {
            let n = be(buf, pos, 1 << (b - 0xc4))? as usize;
            return dec_str(buf, pos, n);
        }
        0xc7..=0xc9 => {
            let n = be(buf, pos, 1 << (b - 0xc7))? as usize;
            take(buf, pos, 1 + n)?;
            Value::Unknown
        }
        0xca => Value::Float(f32::from_bits(be(buf, pos, 4)? as u32) as f64),
        0xcb => Value::Float(f64::from_bits(be(buf, pos, 8)?)),
        0xcc..=0xcf => {
            let u = be(buf, pos, 1 << (b - 0xcc))?;
            match i64::try_from(u) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(u as f64),
            }
        }
        0xd0 => Value::Int(be(buf, pos, 1)? as u8 as i8 as i64),
        0xd1 => Value::Int(be(buf, pos, 2)? as u16 as i16 as i64),
        0xd2 => Value::Int(be(buf, pos, 4)? as u32 as i32 as i64),
        0xd3 => Value::Int(be(buf, pos, 8)? as i64),
        0xd4..=0xd8 => {
            take(buf, pos, 1 + (1 << (b - 0xd4)))?;
            Value::Unknown
        }
        0xd9..=0xdb => {
            let n = be(buf, pos, 1 << (b - 0xd9))? as usize;
            return dec_str(buf, pos, n);
        }
        0xdc | 0xdd => {
            let n = be(buf, pos, if b == 0xdc { 2 } else { 4 })? as usize;
            return dec_list(buf, pos, n);
        }
        0xde | 0xdf => {
            let n = be(buf, pos, if b == 0xde { 2 } else { 4 })? as usize;
            return dec_map(buf, pos, n);
        }
        0xe0..=0xff => Value::Int(b as i8 as i64),
        0xc1 => bail!("msgpack: reserved byte 0xc1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_state_object() {
        let mut m = BTreeMap::new();
        m.insert("name".to_string(), Value::Str("x".repeat(40)));
        m.insert("vni".to_string(), Value::Int(10_001));
        m.insert("neg".to_string(), Value::Int(-1));
        m.insert("gw".to_string(), Value::Null);
        m.insert("id".to_string(), Value::Unknown);
        m.insert(
            "tiers".to_string(),
            Value::List(vec![Value::Str("a".into()), Value::Bool(true)]),
        );
        let v = Value::Map(m);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
    }

    #[test]
    fn unknown_is_ctys_fixext1() {
        assert_eq!(encode(&Value::Unknown), vec![0xd4, 0, 0]);
        assert_eq!(decode(&[0xc7, 2, 0x0c, 1, 2]).unwrap(), Value::Unknown);
    }

    #[test]
    fn reads_unsigned_and_float_numbers() {
        assert_eq!(decode(&[0xcd, 0x27, 0x11]).unwrap(), Value::Int(10_001));
        assert_eq!(
            decode(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]).unwrap(),
            Value::Float(1.5)
        );
        assert!(decode(&[0xa5, b'a']).is_err());
    }
}
