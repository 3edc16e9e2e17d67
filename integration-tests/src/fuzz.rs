//! The bodies of the fuzz targets in `integration-tests/fuzz`. Each takes arbitrary bytes
//! and must neither panic nor break the property it checks. `tests/fuzz_corpora.rs`
//! replays every committed corpus file through them on stable Rust, so CI keeps what
//! the fuzzers found without a nightly toolchain.

use ballast_balancer::{Balancer, BalancerConfig, KeyPolicy, PartitionMeta};
use ballast_core::ErrorCode;
use ballast_produce::{record_size, WriteLimits};
use ballast_proto::ingest::v1 as pb;
use ballast_telemetry::ServiceConfig;
use prost::Message;
use std::time::Instant;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("ingest", ingest),
    ("config", config),
    ("planner", planner),
    ("scram", scram),
];

/// The failover envelope decoder: garbage is an error, never a panic; what decodes
/// encodes back to bytes that decode to the same envelope; the record the retry worker
/// would rebuild from it is valid or refused with a code.
pub fn envelope(data: &[u8]) {
    use ballast_failover::envelope;
    let Ok(env) = envelope::decode(data) else {
        return;
    };
    let again = envelope::decode(&envelope::encode(&env)).expect("a re-encoded envelope decodes");
    assert_eq!(again, env, "an envelope survives encode and decode");
    if let Ok(rec) = ballast_produce::failover::record_of(&env) {
        let id = if env.message_id.is_empty() {
            "fuzz"
        } else {
            &env.message_id
        };
        let _ = ballast_produce::validate(&rec, id, &WriteLimits::default());
    }
}

/// Six partitions over three brokers in three racks, the last one leaderless.
fn balancer() -> Balancer {
    let mut b = Balancer::new(BalancerConfig {
        rack: Some("az-a".into()),
        ..BalancerConfig::default()
    });
    let racks = ["az-a", "az-b", "az-c"];
    let parts: Vec<PartitionMeta> = (0..6)
        .map(|p| PartitionMeta {
            partition: p,
            leader: (p != 5).then_some(p % 3 + 1),
            leader_rack: (p != 5).then(|| racks[p as usize % 3].to_string()),
        })
        .collect();
    b.update_topic("events", &parts);
    b.set_cluster_reachable(true);
    b
}

/// The ingest request path up to the Kafka write: proto bytes, the gateway's conversion,
/// admission, and the balancer's pick (the write itself is where this stops). A record
/// fails alone with a code; a pick is a partition of the topic; a STRICT keyed record
/// goes to its murmur2 partition or nowhere.
pub fn ingest(data: &[u8]) {
    let Ok(req) = pb::ProduceRequest::decode(data) else {
        return;
    };
    let limits = WriteLimits {
        max_record_bytes: 4096,
        ..WriteLimits::default()
    };
    let mut balancer = balancer();
    let now = Instant::now();
    for rec in req.records {
        let rec = match ballast_gateway::convert::record(rec) {
            Ok(rec) => rec,
            Err(produced) => {
                let e = produced
                    .outcome
                    .expect_err("a refused record carries an error");
                assert_eq!(e.code, ErrorCode::InvalidArgument);
                continue;
            }
        };
        let id = if rec.message_id.is_empty() {
            "generated-id".to_string()
        } else {
            rec.message_id.clone()
        };
        match ballast_produce::validate(&rec, &id, &limits) {
            Ok(size) => {
                assert_eq!(size, record_size(&rec));
                assert!(size <= limits.max_record_bytes);
            }
            Err(e) => {
                assert!(!e.message.is_empty(), "an error says why");
                continue;
            }
        }
        if let Ok(pick) = balancer.pick(&rec.pick_request(&[], true), now) {
            assert!((0..5).contains(&pick.partition), "a pick has a leader");
            if let Some(p) = rec.partition {
                assert_eq!(pick.partition, p, "a pinned record goes where it is pinned");
            } else if let (Some(key), KeyPolicy::Strict) = (&rec.key, rec.key_policy) {
                assert_eq!(
                    pick.partition,
                    ballast_balancer::partition_for_key(key, 6),
                    "a STRICT keyed record goes to its murmur2 partition"
                );
            }
            balancer.complete(&rec.topic, &pick, None, now);
        }
    }
}

/// Config loading: each service's YAML config is loaded and validated or refused with a
/// message; a loaded config dumps to YAML that loads back.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    fn one<T: ServiceConfig>(text: &str) {
        match T::from_yaml(text) {
            Ok(cfg) => {
                let again: serde_yaml::Value =
                    serde_yaml::to_value(&cfg).expect("a loaded config serializes");
                let yaml = serde_yaml::to_string(&again).expect("yaml renders");
                T::from_yaml(&yaml).expect("a dumped config loads back");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    one::<ballast_gateway::GatewayConfig>(text);
    one::<ballast_retry_worker::WorkerConfig>(text);
    one::<ballast_dedup_service::DedupConfig>(text);
    one::<ballast_topology::TopologyConfig>(text);
}

/// The reassignment planner's JSON input: a plan or an error, and every stage renders
/// as JSON that parses.
pub fn planner(data: &[u8]) {
    use ballast_topology::plan;
    let Ok(req) = serde_json::from_slice::<plan::ReassignmentRequest>(data) else {
        return;
    };
    if let Ok(p) = plan::plan_reassignment(&req) {
        for s in &p.stages {
            serde_json::from_str::<serde_json::Value>(&plan::reassignment_json(s))
                .expect("a stage renders as JSON");
        }
    }
}

/// The SCRAM client against a server's messages: the first line is the server-first
/// message, the rest the server-final one. Errors, never panics; a forged server
/// signature is never accepted.
pub fn scram(data: &[u8]) {
    use ballast_kafka::sasl::scram::{ScramClient, ScramHash};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, last) = text.split_once('\n').unwrap_or((text, ""));
    for hash in [ScramHash::Sha256, ScramHash::Sha512] {
        let mut client =
            ScramClient::with_nonce(hash, "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
        if client.client_final(first).is_ok() {
            let _ = client.verify_server_final(last);
            assert!(
                client.verify_server_final("").is_err(),
                "a server-final message without a signature is never accepted"
            );
        }
    }
}
