//! nats-server children for the cluster tests: one JetStream node, or a cluster of several
//! whose nodes a test can SIGKILL and start again.
//!
//! Steps of [`NatsCluster::start`], each bounded:
//! 1. Find `nats-server` (on `PATH` or in Debian's `/usr/sbin`); `.ci/run` installs the
//!    package where it is missing. Without it the test fails, saying so.
//! 2. Take free loopback ports for every node (client, cluster route, monitoring) and write
//!    each node a config: JetStream on, its store under the cluster's temp dir, and for more
//!    than one node a `cluster` block with routes to every other node.
//! 3. Spawn every node, then wait until each answers `/healthz` with 200 — for JetStream that
//!    means it has a meta leader, so streams and KV buckets can be created — at most
//!    [`NATS_READY_MS`].
//!
//! [`NatsCluster::kill`] SIGKILLs one node (its store stays); [`NatsCluster::restart`] starts
//! it again on the same ports and store. Drop kills every node and removes the directory.
//! Only loopback is listened on. Test code: it panics on failure, naming the step.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a started node (or the whole cluster) to report healthy.
pub const NATS_READY_MS: u64 = 20_000;

/// One node's ports and child process.
struct Node {
    name: String,
    client_port: u16,
    conf: PathBuf,
    monitor_port: u16,
    child: Option<Child>,
}

/// nats-server nodes started for one test.
pub struct NatsCluster {
    dir: PathBuf,
    program: PathBuf,
    nodes: Vec<Node>,
}

/// The `nats-server` executable: on `PATH`, or where Debian installs it.
pub fn nats_server_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A free loopback port, held (by the listener returned) until the caller drops it, so that
/// asking for several never returns the same one twice.
fn free_port(held: &mut Vec<TcpListener>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    let port = l.local_addr().expect("its address").port();
    held.push(l);
    port
}

impl NatsCluster {
    /// Starts `nodes` JetStream nodes (one: a lone server; more: one NATS cluster) and waits
    /// until every one is healthy.
    pub fn start(tag: &str, nodes: usize) -> NatsCluster {
        Self::start_with(tag, nodes, None, "")
    }

    /// One node in operator mode: `block` is its `operator`, `resolver` and
    /// `resolver_preload` lines (JWTs the test made), so clients log in with a credentials
    /// file. Ready once healthy (one node: no meta leader to wait for).
    pub fn start_with_operator(tag: &str, block: &str) -> NatsCluster {
        Self::start_with(tag, 1, None, block)
    }

    /// [`NatsCluster::start`] with clients required to log in as `user` with `password`
    /// (the servers' `authorization` block).
    pub fn start_with_user(tag: &str, nodes: usize, user: &str, password: &str) -> NatsCluster {
        Self::start_with(tag, nodes, Some((user, password)), "")
    }

    fn start_with(tag: &str, nodes: usize, user: Option<(&str, &str)>, block: &str) -> NatsCluster {
        assert!(nodes >= 1, "a NATS cluster has at least one node");
        let program = nats_server_program()
            .expect("nats-server not found (Debian package nats-server; .ci/run installs it)");
        let dir = crate::temp_dir(&format!("nats-{tag}"));
        let mut held = Vec::new();
        let ports: Vec<(u16, u16, u16)> = (0..nodes)
            .map(|_| {
                (
                    free_port(&mut held),
                    free_port(&mut held),
                    free_port(&mut held),
                )
            })
            .collect();
        drop(held);
        let mut cluster = NatsCluster {
            dir: dir.clone(),
            program,
            nodes: Vec::with_capacity(nodes),
        };
        for (i, &(client, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).expect("create the node's store dir");
            let mut conf = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\n\
                 http: \"127.0.0.1:{monitor}\"\nlog_file: \"{}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n}}\n",
                store.join("server.log").display(),
                store.join("js").display(),
            );
            if nodes > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &(_, r, _))| format!("\"nats://127.0.0.1:{r}\""))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{\n  name: switchboard-test\n  listen: \"127.0.0.1:{route}\"\n  \
                     routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            if let Some((u, p)) = user {
                conf.push_str(&format!(
                    "authorization {{\n  user: \"{u}\"\n  password: \"{p}\"\n}}\n"
                ));
            }
            conf.push_str(block);
            let conf_path = store.join("nats.conf");
            std::fs::write(&conf_path, conf).expect("write the node's config");
            cluster.nodes.push(Node {
                name,
                client_port: client,
                conf: conf_path,
                monitor_port: monitor,
                child: None,
            });
        }
        for i in 0..nodes {
            cluster.spawn(i);
        }
        for i in 0..nodes {
            cluster.wait_healthy(i);
        }
        // Healthy is not yet serving: a new cluster's JetStream answers once its meta leader
        // is known everywhere.
        let deadline = Instant::now() + Duration::from_millis(NATS_READY_MS);
        for n in cluster.nodes.iter().filter(|_| block.is_empty()) {
            while !jetstream_answers_as(n.client_port, user) {
                assert!(
                    Instant::now() < deadline,
                    "JetStream on {} not answering within {NATS_READY_MS} ms",
                    n.name
                );
            }
        }
        cluster
    }

    /// Every node's client URL, comma-separated (what `--cluster` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The node a client named `name` (its `CONNECT` name) is connected to now, from each
    /// live node's `/connz`.
    pub fn node_serving(&self, name: &str) -> Option<usize> {
        let needle = format!("\"name\": \"{name}\"");
        self.nodes.iter().position(|n| {
            n.child.is_some()
                && http_get(n.monitor_port, "/connz").is_some_and(|body| body.contains(&needle))
        })
    }

    /// The directory every node's store, config and log live under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs node `i` and reaps it; its store stays for [`NatsCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nats-server {}: {e}", node.name));
        node.child = Some(child);
    }

    /// Polls node `i`'s `/healthz` until it answers 200 (JetStream has a meta leader).
    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_millis(NATS_READY_MS);
        loop {
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait().expect("try_wait on nats-server") {
                    panic!(
                        "nats-server {} exited at start ({status}); its log: {}",
                        node.name,
                        self.dir.join(&node.name).join("server.log").display()
                    );
                }
            }
            if healthz_ok(node.monitor_port) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server {} not healthy within {NATS_READY_MS} ms; its log: {}",
                    node.name,
                    self.dir.join(&node.name).join("server.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One `GET /healthz` on the monitoring port: true on a 200 answer.
fn healthz_ok(port: u16) -> bool {
    http_get(port, "/healthz").is_some()
}

/// One `GET path` on a node's monitoring port: the whole answer when it is a 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    (answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")).then_some(answer)
}

/// Whether the node at `url_port` answers a JetStream request (`$JS.API.INFO`, over the
/// plain NATS text protocol) within 5 s: it does only once JetStream works there.
pub fn jetstream_answers(url_port: u16) -> bool {
    jetstream_answers_as(url_port, None)
}

/// [`jetstream_answers`], logged in as `user` (name, password) where the servers ask.
fn jetstream_answers_as(url_port: u16, user: Option<(&str, &str)>) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", url_port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let login = user.map_or(String::new(), |(u, p)| {
        format!(",\"user\":\"{u}\",\"pass\":\"{p}\"")
    });
    let hello = format!(
        "CONNECT {{\"verbose\":false{login}}}\r\nSUB _INBOX.t 1\r\nPUB $JS.API.INFO _INBOX.t 0\r\n\r\n"
    );
    s.write_all(hello.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&seen).contains("io.nats.jetstream.api.v1.account_info") {
            return true;
        }
    }
    false
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // A failing test keeps the nodes' logs (its message names them).
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks again until JetStream answers: after a node dies the others elect a new meta
    /// leader, which takes a few seconds.
    fn jetstream_answers_within(port: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if jetstream_answers(port) {
                return true;
            }
        }
        false
    }

    fn port_of(url: &str) -> u16 {
        url.rsplit(':').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_three_node_cluster_serves_jetstream_and_survives_a_node_restart() {
        let Some(_) = nats_server_program() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is missing under CI"
            );
            return;
        };
        let mut c = NatsCluster::start("testkit", 3);
        assert_eq!(c.url().split(',').count(), 3);
        assert!(jetstream_answers(port_of(&c.node_url(0))));
        c.kill(1);
        assert!(
            jetstream_answers_within(port_of(&c.node_url(2)), Duration::from_secs(30)),
            "two of three nodes keep JetStream"
        );
        c.restart(1);
        assert!(jetstream_answers_within(
            port_of(&c.node_url(1)),
            Duration::from_secs(30)
        ));
    }
}
