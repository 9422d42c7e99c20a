//! The Redis backend on a Redis Cluster: the conformance suite, one round trip for a batch,
//! `clear` and the `kvcache` command's walks routed to the right nodes, the seed's example, the
//! configuration of seed nodes, and a failover on a private cluster this test starts itself.
//!
//! The shared cluster is `KVCACHE_TEST_REDIS_CLUSTER_URL`, by default
//! `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002` (`.ci/run` starts it).
//! Unreachable, a test is skipped with a notice, or fails when `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::{both, everything_shown, free_port, paths, raw, unavailable};
use kvcache_core::inspect::Inspect;
use kvcache_core::{Backend, Error, KvCache, Lease, testkit};
use kvcache_redis::{RedisBackend, RedisConfig};

const DEFAULT_URL: &str = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002";

/// The shared cluster's tests count commands on its nodes (`INFO commandstats`): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The seed nodes of a `redis+cluster://` URL, as `redis://HOST:PORT` URLs.
fn seeds(url: &str) -> Vec<String> {
    let hosts = url.split_once("://").expect("a URL").1;
    hosts
        .split(',')
        .map(|host| format!("redis://{}", host.trim_end_matches('/')))
        .collect()
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    /// `HOST:PORT`.
    address: String,
    master: bool,
    failed: bool,
    /// The master a replica follows.
    follows: Option<String>,
    slots: Vec<(u16, u16)>,
}

impl Node {
    fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    fn port(&self) -> u16 {
        self.address.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(start, end)| (start..=end).contains(&slot))
    }
}

/// The nodes of the cluster `seed` (a `redis://` URL of one node) is in, as it sees them.
fn cluster_nodes(seed: &str) -> Vec<Node> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut raw(seed))
        .expect("CLUSTER NODES");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|slot| !slot.starts_with('['))
                .map(|slot| match slot.split_once('-') {
                    Some((start, end)) => (start.parse().unwrap(), end.parse().unwrap()),
                    None => (slot.parse().unwrap(), slot.parse().unwrap()),
                })
                .collect();
            Node {
                id: fields[0].to_owned(),
                address: fields[1].split(['@', ',']).next().unwrap().to_owned(),
                master: flags.contains(&"master"),
                failed: flags.contains(&"fail") || flags.contains(&"fail?"),
                follows: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            }
        })
        .collect()
}

/// The live masters the cluster of `seed` has.
fn masters(seed: &str) -> Vec<Node> {
    cluster_nodes(seed)
        .into_iter()
        .filter(|node| node.master && !node.failed && !node.slots.is_empty())
        .collect()
}

/// The slot of `key` (`CLUSTER KEYSLOT`).
fn keyslot(seed: &str, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut raw(seed))
        .expect("CLUSTER KEYSLOT")
}

/// The live master that serves `slot`.
fn owner(seed: &str, slot: u16) -> Node {
    masters(seed)
        .into_iter()
        .find(|node| node.owns(slot))
        .unwrap_or_else(|| panic!("no master serves slot {slot}"))
}

/// The Redis key of (container, key), as the crate docs state it.
fn documented_key(prefix: &str, container: &str, key: &str) -> String {
    format!("{prefix}:{{{}:{container}}}:{key}", container.len())
}

/// How many times the node at `url` ran `command` since it started (`INFO commandstats`).
fn calls_of(url: &str, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw(url))
        .unwrap();
    let line = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().trim().parse().unwrap()
        })
}

/// The keys matching `pattern` on every live master of the cluster of `seed`.
fn keys_on_cluster(seed: &str, pattern: &str) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for master in masters(seed) {
        let mut conn = raw(&master.url());
        let mut cursor = 0_u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .unwrap();
            all.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    all
}

/// Deletes every key under `prefix`, on every master of the cluster of `seed`, when dropped.
struct Cleanup {
    seed: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(nodes) = std::panic::catch_unwind(|| masters(&self.seed)) else {
            return;
        };
        for master in nodes {
            common::unlink_prefix(&master.url(), &self.prefix);
        }
    }
}

/// The shared cluster's URL when it can be reached, else a notice (a failure under `CI=true`).
fn cluster_url() -> Option<String> {
    let url =
        std::env::var("KVCACHE_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    match RedisConfig::new(&url)
        .connect_timeout(Duration::from_secs(2))
        .open()
    {
        Ok(_) => Some(url),
        Err(error) => unavailable(&format!(
            "the Redis Cluster of KVCACHE_TEST_REDIS_CLUSTER_URL ({error})"
        )),
    }
}

/// What a test on the shared cluster needs: its turn, the URL, the first seed's `redis://` URL,
/// a unique prefix, and the cleanup of that prefix.
struct Shared {
    _turn: MutexGuard<'static, ()>,
    url: String,
    seed: String,
    prefix: String,
    _cleanup: Cleanup,
}

fn setup(label: &str) -> Option<Shared> {
    let turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let url = cluster_url()?;
    let seed = seeds(&url).remove(0);
    let prefix = testkit::unique(label);
    Some(Shared {
        _turn: turn,
        _cleanup: Cleanup {
            seed: seed.clone(),
            prefix: prefix.clone(),
        },
        url,
        seed,
        prefix,
    })
}

/// A backend on the cluster at `url` under `prefix`, with short timeouts.
fn open(url: &str, prefix: &str) -> RedisBackend {
    common::config(url, prefix)
        .open()
        .expect("open the Redis backend on the cluster")
}

/// Container names, one on each live master of the cluster: the first name of `label-N` whose
/// slot that master serves.
fn one_container_per_master(seed: &str, prefix: &str, label: &str) -> Vec<String> {
    let masters = masters(seed);
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for n in 0.. {
        let name = format!("{label}-{n}");
        let slot = keyslot(seed, &documented_key(prefix, &name, "k"));
        let master = masters.iter().find(|m| m.owns(slot)).expect("a master");
        found.entry(master.id.clone()).or_insert(name);
        if found.len() == masters.len() {
            break;
        }
    }
    found.into_values().collect()
}

#[test]
fn passes_the_conformance_suite_on_a_cluster() {
    let Some(shared) = setup("cluster-conformance") else {
        return;
    };
    let backend = open(&shared.url, &shared.prefix);
    assert!(
        format!("{backend:?}").contains("redis cluster at 127.0.0.1:7000"),
        "{backend:?}"
    );
    testkit::run(&backend, testkit::Time::Real);
    testkit::leases(&backend, testkit::Time::Real);
}

#[test]
fn a_batch_is_one_round_trip_to_the_node_that_owns_the_container() {
    let Some(shared) = setup("cluster-batch") else {
        return;
    };
    let backend = open(&shared.url, &shared.prefix);
    let keys: Vec<String> = (0..16).map(|i| format!("key-{i}")).collect();
    let asked: Vec<&str> = keys.iter().map(String::as_str).collect();

    // Every key of the container is in one slot.
    let slot = keyslot(
        &shared.seed,
        &documented_key(&shared.prefix, "batch", &keys[0]),
    );
    for key in &keys {
        assert_eq!(
            keyslot(&shared.seed, &documented_key(&shared.prefix, "batch", key)),
            slot,
            "{key}"
        );
    }
    let owner = owner(&shared.seed, slot);
    let counts = |command: &str| -> Vec<(String, u64)> {
        masters(&shared.seed)
            .iter()
            .map(|m| (m.address.clone(), calls_of(&m.url(), command)))
            .collect()
    };
    // The calls of `command` on each master since `before`: only the owner's may have moved.
    let delta = |command: &str, before: &[(String, u64)]| -> u64 {
        let after = counts(command);
        for ((address, was), (_, now)) in before.iter().zip(&after) {
            if *address != owner.address {
                assert_eq!(
                    now, was,
                    "{command} ran on {address}, which does not own slot {slot}"
                );
            }
        }
        let position = after.iter().position(|(a, _)| *a == owner.address).unwrap();
        after[position].1 - before[position].1
    };

    for (path, store) in paths(&backend, "batch") {
        let value = format!("from the {path} path");
        let entries: Vec<(&str, &[u8])> = asked.iter().map(|k| (*k, value.as_bytes())).collect();
        let before = counts("set");
        store.store_many(&entries, None).unwrap();
        assert_eq!(
            delta("set", &before),
            16,
            "{path} path: the pipeline's 16 SETs ran on the owner, {}",
            owner.address
        );

        let before = counts("mget");
        let found = store.retrieve_many(&asked).unwrap();
        assert_eq!(
            delta("mget", &before),
            1,
            "{path} path: 16 keys are one MGET on the owner, {}",
            owner.address
        );
        assert!(
            found.iter().all(|v| v.as_deref() == Some(value.as_bytes())),
            "{path} path: {found:?}"
        );
        eprintln!(
            "{path} path: 16 keys of slot {slot} were 1 MGET and one pipeline of 16 SETs on {}",
            owner.address
        );
    }
}

#[test]
fn leases_and_their_release_script_run_on_the_owning_node() {
    let Some(shared) = setup("cluster-lease") else {
        return;
    };
    let backend = open(&shared.url, &shared.prefix);
    let slot = keyslot(&shared.seed, &documented_key(&shared.prefix, "c", "k"));
    let owner = owner(&shared.seed, slot);
    let ttl = Duration::from_secs(60);
    for (path, store) in paths(&backend, "c") {
        let before = (
            calls_of(&owner.url(), "evalsha"),
            calls_of(&owner.url(), "script|load"),
        );
        assert_eq!(store.lease("k", path, ttl).unwrap(), Lease::Acquired);
        assert_eq!(store.lease("k", "other", ttl).unwrap(), Lease::Held);
        store.release("k", "other").unwrap();
        assert_eq!(store.lease("k", "other", ttl).unwrap(), Lease::Held);
        store.release("k", path).unwrap();
        assert_eq!(store.lease("k", "other", ttl).unwrap(), Lease::Acquired);
        store.release("k", "other").unwrap();
        // A node that did not know the script answered the first EVALSHA with NOSCRIPT: it was
        // loaded (on every node), and sent again.
        let loaded = calls_of(&owner.url(), "script|load") - before.1;
        assert!(loaded <= 1, "{path} path: loaded {loaded} times");
        assert_eq!(
            calls_of(&owner.url(), "evalsha") - before.0,
            3 + loaded,
            "{path} path: each release is an EVALSHA on {}",
            owner.address
        );
    }
}

#[test]
fn clear_on_a_cluster_empties_only_its_container() {
    let Some(shared) = setup("cluster-clear") else {
        return;
    };
    let backend = open(&shared.url, &shared.prefix);
    let other_prefix = format!("{}-other", shared.prefix);
    let _other_cleanup = Cleanup {
        seed: shared.seed.clone(),
        prefix: other_prefix.clone(),
    };
    let other = open(&shared.url, &other_prefix);
    let slot_of = |container: &str| {
        keyslot(
            &shared.seed,
            &documented_key(&shared.prefix, container, "k"),
        )
    };
    let big_owner = owner(&shared.seed, slot_of("big"));
    // A container on the node that owns "big"'s slot, and one on another node.
    let (mut neighbour, mut elsewhere) = (None, None);
    for n in 0.. {
        let name = format!("c{n}");
        let here = owner(&shared.seed, slot_of(&name)).id == big_owner.id;
        match (here, &neighbour, &elsewhere) {
            (true, None, _) => neighbour = Some(name),
            (false, _, None) => elsewhere = Some(name),
            _ => {}
        }
        if neighbour.is_some() && elsewhere.is_some() {
            break;
        }
    }
    let (neighbour, elsewhere) = (neighbour.unwrap(), elsewhere.unwrap());

    for via in both(&backend) {
        eprintln!("through the {} path", via.path);
        // More keys than one SCAN step finds.
        let keys: Vec<String> = (0..2500).map(|i| i.to_string()).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        via.store_many("big", &entries, None).unwrap();
        via.store(&neighbour, "k", b"neighbour", None).unwrap();
        via.store(&elsewhere, "k", b"elsewhere", None).unwrap();
        other
            .open("big")
            .unwrap()
            .sync_store()
            .store("k", b"other prefix", None)
            .unwrap();
        let pattern = format!("{}:{{3:big}}:*", shared.prefix);
        assert_eq!(keys_on_cluster(&shared.seed, &pattern).len(), 2500);

        via.clear("big").unwrap();
        assert!(
            keys_on_cluster(&shared.seed, &pattern).is_empty(),
            "no key of the container is left on any node"
        );
        let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(
            via.retrieve_many("big", &asked)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(
            via.retrieve(&neighbour, "k").unwrap().as_deref(),
            Some(&b"neighbour"[..]),
            "a container on the same node is left"
        );
        assert_eq!(
            via.retrieve(&elsewhere, "k").unwrap().as_deref(),
            Some(&b"elsewhere"[..])
        );
        assert_eq!(
            other
                .open("big")
                .unwrap()
                .sync_store()
                .retrieve("k")
                .unwrap()
                .as_deref(),
            Some(&b"other prefix"[..]),
            "the same container under another prefix is left"
        );
    }
}

#[test]
fn the_kvcache_command_walks_every_master() {
    let Some(shared) = setup("cluster-inspect") else {
        return;
    };
    let backend = open(&shared.url, &shared.prefix);
    let names = one_container_per_master(&shared.seed, &shared.prefix, "c");
    assert_eq!(names.len(), masters(&shared.seed).len());
    let none = &mut |_| {};
    for name in &names {
        let store = backend.open(name).unwrap().sync_store();
        store.store("a", b"12345", None).unwrap();
        store
            .store("b", b"1", Some(Duration::from_secs(600)))
            .unwrap();
        // A lease names no container.
        assert_eq!(
            backend
                .open(&format!("{name}-leases"))
                .unwrap()
                .sync_store()
                .lease("k", "t", Duration::from_secs(60))
                .unwrap(),
            Lease::Acquired
        );
    }
    let mut expected = names.clone();
    expected.sort();
    let mut seen = 0;
    let listed = backend
        .containers(&mut |count| seen = count)
        .unwrap()
        .expect("a listing");
    assert_eq!(listed, expected, "one container on each master");
    assert!(
        seen >= 2 * names.len() as u64,
        "progress counted {seen} keys"
    );
    for name in &names {
        assert_eq!(backend.keys(name, "", None, none).unwrap(), ["a", "b"]);
        assert_eq!(backend.keys(name, "b", None, none).unwrap(), ["b"]);
        let summary = backend.summary(name, none).unwrap();
        assert_eq!(summary.entries, 2, "{name}: {summary:?}");
        assert_eq!(summary.bytes, Some(6));
        assert_eq!(summary.without_expiry, Some(1));
        let entry = backend.entry(name, "a").unwrap().expect("an entry");
        assert_eq!(entry.value, b"12345");
        assert_eq!(entry.expires_at, None);
        let expiring = backend.entry(name, "b").unwrap().expect("an entry");
        assert!(expiring.expires_at.is_some());
        assert!(backend.entry(name, "missing").unwrap().is_none());
    }
}

#[test]
fn the_seeds_example_runs_on_a_cluster() {
    let Some(shared) = setup("cluster-greeting") else {
        return;
    };
    // examples/redis.rs (the seed's greeting.rs on Redis), with its lines collected.
    let cache = kvcache_core::init([
        ("backend.redis", "redis"),
        ("backend.redis.url", shared.url.as_str()),
        ("backend.redis.prefix", shared.prefix.as_str()),
        ("container.greeting.backend", "redis"),
    ])
    .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let generated = Arc::clone(&lines);
    cache
        .register_generator("greeting", move |name: &str| {
            generated
                .lock()
                .unwrap()
                .push(format!("Generating the value for key \"{name}\"."));
            format!("Hello {name}!")
        })
        .unwrap();
    let greeting = cache.container::<String>("greeting").unwrap();
    greeting.clear().unwrap();
    for name in ["Peter", "Peter", "William"] {
        let value = greeting.get(name).unwrap();
        lines.lock().unwrap().push(value);
    }
    assert_eq!(
        *lines.lock().unwrap(),
        [
            "Generating the value for key \"Peter\".",
            "Hello Peter!",
            "Hello Peter!",
            "Generating the value for key \"William\".",
            "Hello William!",
        ]
    );
    // The values are in the cluster, under the documented keys.
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(documented_key(&shared.prefix, "greeting", "Peter"))
        .query(&mut raw(&owner(
            &shared.seed,
            keyslot(
                &shared.seed,
                &documented_key(&shared.prefix, "greeting", "Peter"),
            ),
        )
        .url()))
        .unwrap();
    assert!(
        stored.is_some(),
        "Peter's value is on the node that owns its slot"
    );
}

/// The error of building a cache whose `backend.r` is at `url`.
fn config_error(url: &str) -> Error {
    kvcache_core::init([("backend.r", "redis"), ("backend.r.url", url)])
        .expect_err("a configuration error")
}

#[test]
fn cluster_urls_are_checked_naming_the_option() {
    for (url, says) in [
        ("redis+cluster://", "a seed node is empty"),
        ("redis+cluster://127.0.0.1:7000,", "a seed node is empty"),
        (
            "redis+cluster://:secret@127.0.0.1:7000,,127.0.0.1:7001",
            "a seed node is empty",
        ),
        (
            "redis+cluster://127.0.0.1:x",
            "seed node \"127.0.0.1:x\" has no valid port",
        ),
        ("redis+cluster://:secret@127.0.0.1:0", "has no valid port"),
        ("redis+cluster://127.0.0.1:7000/1", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000?db=1", "database 0 only"),
    ] {
        match config_error(url) {
            Error::InvalidConfig { key, message } => {
                assert_eq!(key, "backend.r.url", "{url}: {message}");
                assert!(message.contains(says), "{url}: {message}");
                assert!(
                    message
                        .contains("redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]"),
                    "says what is expected: {message}"
                );
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("{url}: expected an error of backend.r.url, got {other:?}"),
        }
    }
    // An unknown scheme names the cluster's among those expected.
    match config_error("redis-cluster://127.0.0.1:7000") {
        Error::InvalidConfig { message, .. } => {
            assert!(message.contains("redis+cluster://"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_cluster_is_an_error_naming_its_seeds_without_the_password() {
    let (a, b) = (free_port(), free_port());
    let url = format!("redis+cluster://:secret-password@127.0.0.1:{a},127.0.0.1:{b}");
    let start = Instant::now();
    let error = RedisConfig::new(&url)
        .connect_timeout(Duration::from_secs(1))
        .open()
        .expect_err("no cluster there");
    let took = start.elapsed();
    let shown = everything_shown(&error);
    assert!(took < Duration::from_secs(3), "the error took {took:?}");
    assert!(
        matches!(error, Error::Unavailable { .. } | Error::Backend { .. }),
        "{shown}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("redis cluster at 127.0.0.1:{a},127.0.0.1:{b}")),
        "{error}"
    );
    assert!(
        error.to_string().contains("no seed node could be reached"),
        "{error}"
    );
    assert!(!shown.contains("secret-password"), "{shown}");
    let config = RedisConfig::new(&url);
    assert!(!format!("{config:?}").contains("secret-password"));
}

/// A Redis Cluster of three masters and three replicas that this test runs on free ports,
/// without persistence, in a directory of its own. Killed when dropped.
struct PrivateCluster {
    _dir: tempfile::TempDir,
    ports: Vec<u16>,
    children: Vec<(u16, Child)>,
}

/// Six consecutive ports from 7100 on, each free, and its cluster bus port (+10000) too.
fn six_free_ports() -> Vec<u16> {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    (7100..7900)
        .step_by(10)
        .map(|base| (base..base + 6).collect::<Vec<u16>>())
        .find(|ports| ports.iter().all(|&p| free(p) && free(p + 10_000)))
        .expect("six free ports")
}

impl PrivateCluster {
    fn start() -> Option<PrivateCluster> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports = six_free_ports();
        let mut cluster = PrivateCluster {
            _dir: dir,
            ports: ports.clone(),
            children: Vec::new(),
        };
        for &port in &ports {
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(cluster._dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => cluster.children.push((port, child)),
                Err(error) => return unavailable(&format!("redis-server ({error})")),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "node {port} did not listen");
                thread::sleep(Duration::from_millis(20));
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match created {
            Ok(status) => assert!(status.success(), "redis-cli --cluster create: {status}"),
            Err(error) => return unavailable(&format!("redis-cli ({error})")),
        }
        // Formed: every node says ok, three masters serve the slots, and each has a replica
        // whose link to it is up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = ports.iter().all(|&port| {
                let info: redis::RedisResult<String> = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut raw(&format!("redis://127.0.0.1:{port}")));
                info.is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            let nodes = cluster_nodes(&cluster.url_of(ports[0]));
            let synced = nodes.iter().filter(|n| !n.master).all(|replica| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut raw(&replica.url()))
                    .unwrap();
                info.contains("master_link_status:up")
            });
            let masters = nodes
                .iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .count();
            let replicas = nodes.iter().filter(|n| !n.master).count();
            if ok && synced && masters == 3 && replicas == 3 {
                return Some(cluster);
            }
            assert!(
                Instant::now() < deadline,
                "the private cluster did not form within 30 s: {nodes:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn url_of(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// The backend's URL: the first three nodes as seeds.
    fn url(&self) -> String {
        let seeds: Vec<String> = self.ports[..3]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to clients or to the other nodes).
    fn kill(&mut self, port: u16) {
        if let Some(position) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(position);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The bound of each call during the failover: the command timeout, and scheduling slack.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(500);
/// How long after the kill the same backend must serve again.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

#[test]
fn a_failover_is_survived_by_the_same_backend() {
    let Some(mut cluster) = PrivateCluster::start() else {
        return;
    };
    let prefix = testkit::unique("failover");
    let backend = RedisConfig::new(cluster.url())
        .prefix(&prefix)
        .connect_timeout(Duration::from_secs(1))
        .command_timeout(COMMAND_TIMEOUT)
        .open()
        .unwrap();
    // The master of container "c"'s slot, its replica, and a cache's container on the same
    // master, so that the kill takes both out.
    let seed = cluster.url_of(cluster.ports[0]);
    let slot = keyslot(&seed, &documented_key(&prefix, "c", "k"));
    let master = owner(&seed, slot);
    let replica = cluster_nodes(&seed)
        .into_iter()
        .find(|n| n.follows.as_deref() == Some(master.id.as_str()))
        .expect("the master's replica");
    let greeting_name = (0..)
        .map(|n| format!("greeting-{n}"))
        .find(|name| master.owns(keyslot(&seed, &documented_key(&prefix, name, "k"))))
        .unwrap();
    let cache = KvCache::builder(
        kvcache_core::Config::from_pairs([(
            format!("container.{greeting_name}.backend"),
            "shared".to_owned(),
        )])
        .unwrap(),
    )
    .backend("shared", Arc::new(backend.clone()))
    .outage_backoff("shared", Duration::from_millis(200))
    .build()
    .unwrap();
    cache
        .register_generator(&greeting_name, |name: &str| format!("Hello {name}!"))
        .unwrap();
    let greeting = cache.container::<String>(&greeting_name).unwrap();
    let [(_, sync), (_, awaited)] = paths(&backend, "c");
    sync.store("k", b"before", None).unwrap();
    let keys: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    let entries: Vec<(&str, &[u8])> = asked.iter().map(|k| (*k, &b"batch"[..])).collect();
    sync.store_many(&entries, None).unwrap();
    assert_eq!(greeting.get("Peter").unwrap(), "Hello Peter!");

    // Replication is asynchronous: a write of this connection after the backend's, acknowledged
    // by the replica (WAIT), tells that the replica has the backend's values too.
    let mut on_master = raw(&master.url());
    redis::cmd("SET")
        .arg(documented_key(&prefix, "c", "marker"))
        .arg("m")
        .query::<()>(&mut on_master)
        .unwrap();
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut on_master)
        .unwrap();
    assert_eq!(acknowledged, 1, "the replica has the values");
    eprintln!(
        "failover: killing master {} of slot {slot} (container {greeting_name:?} too); replica {} \
         should take over",
        master.address, replica.address
    );

    cluster.kill(master.port());
    let killed = Instant::now();
    let mut promoted: Option<Duration> = None;
    let mut errors: Vec<(Duration, String)> = Vec::new();
    let mut served: Option<Duration> = None;
    let check =
        |what: &str, took: Duration, error: &Error, errors: &mut Vec<(Duration, String)>| {
            assert!(
                took < COMMAND_TIMEOUT + SLACK,
                "{what} took {took:?} during the failover: {error}"
            );
            match error {
                Error::Unavailable { backend, .. } | Error::Backend { backend, .. } => {
                    assert!(
                        backend == "redis" || backend == "shared",
                        "names the backend: {error:?}"
                    );
                }
                other => panic!("{what}: not an Unavailable or Backend error: {other:?}"),
            }
            let shown = error.to_string();
            assert!(
                shown.contains("redis cluster at 127.0.0.1:") || error.is_unavailable(),
                "names the cluster: {shown}"
            );
            errors.push((killed.elapsed(), format!("{what}: {shown}")));
        };
    while served.is_none() {
        assert!(
            killed.elapsed() < RECOVERY_BOUND,
            "the backend did not serve again within {RECOVERY_BOUND:?} of the kill; errors: {errors:#?}"
        );
        if promoted.is_none() {
            let role: redis::RedisResult<Vec<redis::Value>> =
                redis::cmd("ROLE").query(&mut raw(&replica.url()));
            if let Ok(role) = role
                && matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
            {
                promoted = Some(killed.elapsed());
            }
        }
        let mut all_ok = true;
        let start = Instant::now();
        match sync.retrieve("k") {
            Ok(value) => assert_eq!(value.as_deref(), Some(&b"before"[..])),
            Err(error) => {
                all_ok = false;
                check("sync retrieve", start.elapsed(), &error, &mut errors);
            }
        }
        let start = Instant::now();
        if let Err(error) = awaited.store("k2", b"during", None) {
            all_ok = false;
            check("async store", start.elapsed(), &error, &mut errors);
        }
        let start = Instant::now();
        if let Err(error) = greeting.set("William", &"Hi William".to_owned()) {
            all_ok = false;
            check("cache set", start.elapsed(), &error, &mut errors);
        }
        if all_ok {
            served = Some(killed.elapsed());
        } else {
            thread::sleep(Duration::from_millis(100));
        }
    }
    let served = served.unwrap();
    eprintln!(
        "failover: replica promoted after {promoted:?} (as first seen), the same backend served \
         again {served:?} after the kill, {} failed calls in between",
        errors.len()
    );
    for (at, error) in &errors {
        eprintln!("  at {at:?}: {error}");
    }

    // Served again by the same objects, the replicated values included.
    assert_eq!(sync.retrieve("k").unwrap().as_deref(), Some(&b"before"[..]));
    assert_eq!(
        awaited.retrieve("k2").unwrap().as_deref(),
        Some(&b"during"[..])
    );
    assert!(
        sync.retrieve_many(&asked)
            .unwrap()
            .iter()
            .all(|v| v.as_deref() == Some(&b"batch"[..])),
        "the batch survived on the replica"
    );
    assert_eq!(greeting.get("William").unwrap(), "Hi William");
    assert_eq!(greeting.get("Peter").unwrap(), "Hello Peter!");
    let ttl = Duration::from_secs(60);
    assert_eq!(awaited.lease("k", "t", ttl).unwrap(), Lease::Acquired);
    awaited.release("k", "t").unwrap();
    sync.clear().unwrap();
    assert_eq!(sync.retrieve("k").unwrap(), None);
    let new_master = owner(&cluster.url_of(replica.port()), slot);
    assert_eq!(new_master.id, replica.id, "the replica serves the slot now");
    let listed = backend.containers(&mut |_| {}).unwrap().unwrap();
    assert!(listed.contains(&greeting_name), "{listed:?}");
}
