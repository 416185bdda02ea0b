//! Talking to a test server's admin endpoint: a blocking HTTP GET, `/stats` as JSON, a
//! strict little Prometheus text parser, and waiting for the shards' next publication.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `GET path` → (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("admin response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(len, body.len(), "Content-Length matches the body");
    (status, body.to_string())
}

/// `/stats`' shard objects, in shard order (valid JSON or the test fails).
pub fn stats(addr: SocketAddr) -> Vec<Value> {
    let (status, body) = get(addr, "/stats");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("/stats is JSON");
    v["shards"].as_array().expect("a shards array").clone()
}

/// A number field of a shard object.
pub fn num(shard: &Value, field: &str) -> u64 {
    shard[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {shard}"))
}

/// Sum of a field over every shard.
pub fn sum(shards: &[Value], field: &str) -> u64 {
    shards.iter().map(|s| num(s, field)).sum()
}

/// Sum of a service statistic (under each shard's `service`) over every shard.
pub fn service_sum(shards: &[Value], field: &str) -> u64 {
    shards.iter().map(|s| num(&s["service"], field)).sum()
}

/// Waits until every one of `shards` shards has published after the moment of the call,
/// and returns those snapshots. Anything the shards finished before the call is in them.
pub fn fresh_stats(addr: SocketAddr, shards: usize) -> Vec<Value> {
    let seen: Vec<u64> = {
        let now = stats(addr);
        (0..shards)
            .map(|i| now.get(i).map_or(0, |s| num(s, "seq")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = stats(addr);
        if now.len() == shards && now.iter().zip(&seen).all(|(s, &q)| num(s, "seq") > q) {
            return now;
        }
        assert!(Instant::now() < deadline, "shards stopped publishing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One Prometheus sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses Prometheus text exposition strictly: every sample's family has HELP and TYPE lines
/// before it, names and label names are valid, label values are quoted, values are numbers.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "bad HELP name: {line}");
            helped.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE: {line}"
            );
            assert!(
                typed.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line: {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(valid_name(name), "bad metric name: {line}");
        let family = family_of(name, &typed);
        assert!(
            typed.contains_key(family) && helped.contains(family),
            "no TYPE/HELP: {line}"
        );
        let mut map = BTreeMap::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label k=v");
            assert!(valid_name(k), "bad label name: {line}");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("unquoted label: {line}"));
            map.insert(k.to_string(), v.to_string());
        }
        out.push(Sample {
            name: name.into(),
            labels: map,
            value,
        });
    }
    out
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` samples
/// belong to the name its TYPE line declared.
fn family_of<'a>(name: &'a str, typed: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if typed.get(base).map(String::as_str) == Some("histogram") {
                return base;
            }
        }
    }
    name
}

/// Metric family names declared by `# TYPE` lines, with their types.
pub fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|r| r.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect()
}

/// Sum over shards of one metric (samples without other labels than `shard`).
pub fn metric_sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.len() == 1)
        .map(|s| s.value)
        .sum()
}

/// The Grafana dashboard (ops/grafana/switchboard.json).
pub fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ops/grafana/switchboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel query (`expr`) of the dashboard.
pub fn dashboard_exprs() -> Vec<String> {
    let mut exprs = Vec::new();
    for p in dashboard()["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("a target has an expr");
            exprs.push(e.to_string());
        }
    }
    exprs
}

/// Every metric name starting with `prefix` (`switchboard_`, ...) in `texts`.
pub fn metric_names(texts: &[String], prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in texts {
        let mut rest = e.as_str();
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}
