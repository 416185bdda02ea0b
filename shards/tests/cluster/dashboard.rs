//! The Grafana dashboard's cluster row (ops/grafana/switchboard.json) queries only what a
//! box of a cluster serves (a single box serves none of it: `tests/ops/metrics.rs` checks
//! the rest of the dashboard against one).

use crate::nats::{Box, Nats};

/// Every `switchboard_cluster_*` name in the dashboard's queries.
fn dashboard_cluster_metrics() -> std::collections::BTreeSet<String> {
    let exprs = crate::support::admin::dashboard_exprs();
    crate::support::admin::metric_names(&exprs, "switchboard_cluster_")
}

#[test]
fn the_dashboards_cluster_row_queries_what_a_box_of_a_cluster_serves() {
    let queried = dashboard_cluster_metrics();
    assert!(queried.len() >= 10, "a cluster row: {queried:?}");
    let nats = Nats::start();
    let a = Box::start(&nats.url, "a", crate::placement::ADV_A, &[]);
    a.wait_stat("cluster_members", 1);
    let (_, text) = crate::support::admin::get(a.admin, "/metrics");
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<_> = queried
        .iter()
        .filter(|n| !served.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "queried but not served: {missing:?}");
}
