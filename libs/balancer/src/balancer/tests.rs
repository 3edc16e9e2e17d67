use super::*;
use crate::config::BreakerConfig;
use crate::FailureKind;
use proptest::prelude::*;
use std::time::Duration;

const RACKS: [&str; 3] = ["az-a", "az-b", "az-c"];

fn meta(n: i32) -> Vec<PartitionMeta> {
    (0..n)
        .map(|p| PartitionMeta {
            partition: p,
            leader: Some(p % 3),
            leader_rack: Some(RACKS[(p % 3) as usize].to_string()),
        })
        .collect()
}

fn balancer(rack: Option<&str>, n: i32) -> Balancer {
    let mut b = Balancer::new(BalancerConfig {
        rack: rack.map(str::to_string),
        breaker: BreakerConfig::default(),
        sticky_records: 1,
        ..BalancerConfig::default()
    });
    b.update_topic("t", &meta(n));
    b
}

fn unkeyed<'a>(exclude: &'a [i32]) -> PickRequest<'a> {
    PickRequest {
        topic: "t",
        key: None,
        policy: KeyPolicy::Strict,
        partition: None,
        exclude,
        allow_probe: true,
    }
}

fn trip(b: &mut Balancer, partition: i32, now: Instant) {
    for _ in 0..b.config().breaker.failure_threshold {
        let req = PickRequest {
            partition: Some(partition),
            ..unkeyed(&[])
        };
        let pick = b.pick(&req, now).expect("admitted");
        b.complete("t", &pick, Some(FailureKind::Timeout), now);
    }
}

#[test]
fn unkeyed_prefers_local_rack_leaders() {
    let mut b = balancer(Some("az-b"), 6);
    let now = Instant::now();
    for _ in 0..20 {
        let pick = b.pick(&unkeyed(&[]), now).unwrap();
        assert!(pick.local);
        assert!(pick.partition == 1 || pick.partition == 4);
        b.complete("t", &pick, None, now);
    }
}

#[test]
fn unkeyed_spreads_by_in_flight_load() {
    let mut b = balancer(Some("az-a"), 6);
    let now = Instant::now();
    let first = b.pick(&unkeyed(&[]), now).unwrap();
    let second = b.pick(&unkeyed(&[]), now).unwrap();
    assert_ne!(
        first.partition, second.partition,
        "both local partitions used"
    );
    assert!(first.local && second.local);
}

#[test]
fn unkeyed_falls_back_to_other_racks_then_fails() {
    let mut b = balancer(Some("az-a"), 6);
    let now = Instant::now();
    trip(&mut b, 0, now);
    trip(&mut b, 3, now);
    let pick = b.pick(&unkeyed(&[]), now).unwrap();
    assert!(!pick.local);
    assert!(![0, 3].contains(&pick.partition));
    for p in [1, 2, 4, 5] {
        trip(&mut b, p, now);
    }
    assert_eq!(
        b.pick(&unkeyed(&[]), now),
        Err(PickError::NoHealthyPartition)
    );
}

#[test]
fn excluded_partitions_are_skipped() {
    let mut b = balancer(None, 3);
    let now = Instant::now();
    let pick = b.pick(&unkeyed(&[0, 1]), now).unwrap();
    assert_eq!(pick.partition, 2);
    assert_eq!(
        b.pick(&unkeyed(&[0, 1, 2]), now),
        Err(PickError::NoHealthyPartition)
    );
}

#[test]
fn strict_keys_never_move() {
    let mut b = balancer(Some("az-a"), 6);
    let now = Instant::now();
    let key = b"user-17";
    let home = partition_for_key(key, 6);
    let req = PickRequest {
        key: Some(key),
        ..unkeyed(&[])
    };
    assert_eq!(b.pick(&req, now).unwrap().partition, home);
    trip(&mut b, home, now);
    assert_eq!(
        b.pick(&req, now),
        Err(PickError::PartitionUnavailable { partition: home })
    );
}

#[test]
fn preferred_keys_rehash_over_healthy_partitions() {
    let mut b = balancer(None, 6);
    let now = Instant::now();
    let key = b"user-17";
    let home = partition_for_key(key, 6);
    trip(&mut b, home, now);
    let req = PickRequest {
        key: Some(key),
        policy: KeyPolicy::Preferred,
        ..unkeyed(&[])
    };
    let a = b.pick(&req, now).unwrap();
    let c = b.pick(&req, now).unwrap();
    assert_ne!(a.partition, home);
    assert_eq!(
        a.partition, c.partition,
        "the same key sticks to one partition"
    );
}

#[test]
fn explicit_partition_is_validated() {
    let mut b = balancer(None, 3);
    let now = Instant::now();
    let req = PickRequest {
        partition: Some(7),
        ..unkeyed(&[])
    };
    assert_eq!(
        b.pick(&req, now),
        Err(PickError::InvalidPartition {
            partition: 7,
            partitions: 3
        })
    );
    assert_eq!(
        b.pick(
            &PickRequest {
                topic: "nope",
                ..unkeyed(&[])
            },
            now
        ),
        Err(PickError::UnknownTopic)
    );
}

#[test]
fn leaderless_metadata_opens_before_any_failure_and_leader_return_probes() {
    let mut b = balancer(None, 3);
    let now = Instant::now();
    let mut m = meta(3);
    m[1].leader = None;
    m[1].leader_rack = None;
    b.update_topic("t", &m);
    assert_eq!(b.status("t", now)[1].state, BreakerState::Open);
    for _ in 0..10 {
        let pick = b.pick(&unkeyed(&[]), now).unwrap();
        assert_ne!(pick.partition, 1);
        b.complete("t", &pick, None, now);
    }
    b.update_topic("t", &meta(3));
    assert_eq!(b.status("t", now)[1].state, BreakerState::HalfOpen);
    let req = PickRequest {
        partition: Some(1),
        ..unkeyed(&[])
    };
    let probe = b.pick(&req, now).unwrap();
    assert_eq!(probe.admission, Admission::Probe);
    b.complete("t", &probe, None, now);
    assert_eq!(b.status("t", now)[1].state, BreakerState::Closed);
}

#[test]
fn draining_brokers_hold_their_partitions() {
    let mut b = balancer(None, 6);
    let now = Instant::now();
    b.set_draining_brokers(HashSet::from([2]));
    let st = b.status("t", now);
    assert_eq!(st[2].state, BreakerState::Open);
    assert_eq!(st[5].state, BreakerState::Open);
    assert!(st[2].draining);
    assert_eq!(st[0].state, BreakerState::Closed);
    b.set_draining_brokers(HashSet::new());
    assert_eq!(b.status("t", now)[2].state, BreakerState::HalfOpen);
}

#[test]
fn rerouted_records_are_not_spent_as_probes() {
    let mut b = balancer(None, 2);
    let now = Instant::now();
    trip(&mut b, 0, now);
    let later = now + Duration::from_secs(1);
    assert_eq!(b.status("t", later)[0].state, BreakerState::HalfOpen);
    for _ in 0..5 {
        let req = PickRequest {
            allow_probe: false,
            ..unkeyed(&[])
        };
        let pick = b.pick(&req, later).unwrap();
        assert_eq!(
            pick.partition, 1,
            "a rerouted record only goes to closed partitions"
        );
        b.complete("t", &pick, None, later);
    }
    let req = PickRequest {
        allow_probe: false,
        ..unkeyed(&[1])
    };
    assert_eq!(b.pick(&req, later), Err(PickError::NoHealthyPartition));
}

#[test]
fn sticky_records_stay_on_one_partition_then_move_to_the_least_loaded() {
    let mut b = balancer(Some("az-a"), 6);
    b.cfg.sticky_records = 3;
    let now = Instant::now();
    let picks: Vec<i32> = (0..3)
        .map(|_| b.pick(&unkeyed(&[]), now).unwrap().partition)
        .collect();
    assert!(picks.iter().all(|p| *p == picks[0]), "{picks:?}");
    let fourth = b.pick(&unkeyed(&[]), now).unwrap();
    assert_ne!(
        fourth.partition, picks[0],
        "the least loaded local partition comes next"
    );
    assert!(fourth.local);
    // A sticky partition that trips is left at once.
    let sticky = fourth.partition;
    trip(&mut b, sticky, now);
    let next = b.pick(&unkeyed(&[]), now).unwrap();
    assert_ne!(next.partition, sticky);
}

#[test]
fn could_place_checks_the_partition_a_strict_key_needs() {
    let mut b = balancer(None, 6);
    let now = Instant::now();
    let key = b"user-17";
    let home = partition_for_key(key, 6);
    trip(&mut b, home, now);
    let strict = PickRequest {
        key: Some(key),
        ..unkeyed(&[])
    };
    let preferred = PickRequest {
        key: Some(key),
        policy: KeyPolicy::Preferred,
        ..unkeyed(&[])
    };
    assert!(!b.could_place(&strict, now));
    assert!(b.could_place(&preferred, now));
    assert!(b.could_place(&unkeyed(&[]), now));
    assert!(!b.could_place(
        &PickRequest {
            topic: "nope",
            ..unkeyed(&[])
        },
        now
    ));
    // Checking admits nothing: the other partitions are still free of in-flight writes.
    assert!(b.status("t", now).iter().all(|s| s.in_flight == 0));
}

#[test]
fn an_unreachable_cluster_holds_every_partition() {
    let mut b = balancer(None, 3);
    let now = Instant::now();
    b.set_cluster_reachable(false);
    assert_eq!(
        b.pick(&unkeyed(&[]), now),
        Err(PickError::NoHealthyPartition)
    );
    assert!(!b.has_healthy_partition("t", now));
    b.set_cluster_reachable(true);
    assert!(b
        .status("t", now)
        .iter()
        .all(|s| s.state == BreakerState::HalfOpen));
    assert!(b.pick(&unkeyed(&[]), now).is_ok());
}

#[test]
fn same_leader_partitions_groups_by_leader() {
    let b = balancer(None, 6);
    assert_eq!(b.same_leader_partitions("t", 1), vec![1, 4]);
    assert_eq!(b.same_leader_partitions("t", 9), vec![9]);
    assert_eq!(b.same_leader_partitions("nope", 2), vec![2]);
}

#[test]
fn non_tripping_failures_leave_partition_healthy() {
    let mut b = balancer(None, 1);
    let now = Instant::now();
    for _ in 0..10 {
        let pick = b.pick(&unkeyed(&[]), now).unwrap();
        b.complete("t", &pick, Some(FailureKind::RecordTooLarge), now);
    }
    assert_eq!(b.status("t", now)[0].state, BreakerState::Closed);
    assert_eq!(b.status("t", now)[0].in_flight, 0);
}

#[test]
fn breaker_recovers_after_open_period() {
    let mut b = balancer(None, 1);
    let now = Instant::now();
    trip(&mut b, 0, now);
    assert_eq!(
        b.pick(&unkeyed(&[]), now),
        Err(PickError::NoHealthyPartition)
    );
    let later = now + Duration::from_secs(1);
    let probe = b.pick(&unkeyed(&[]), later).unwrap();
    assert_eq!(probe.admission, Admission::Probe);
    b.complete("t", &probe, None, later);
    assert_eq!(b.status("t", later)[0].state, BreakerState::Closed);
}

proptest! {
    /// Under any mix of failures, successes, holds and time, the balancer never places a
    /// record on an excluded or non-admitting partition, never moves a STRICT key, and
    /// always places an unkeyed record when some partition can take it.
    #[test]
    fn placement_invariants(
        n in 1i32..12,
        steps in proptest::collection::vec(
            (0u8..6, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)), 0u64..1500, 0i32..12, any::<bool>()),
            1..150),
    ) {
        let mut b = balancer(Some("az-a"), n);
        b.cfg.sticky_records = 3;
        // Three zones: a zone left with too few healthy partitions spills.
        b.set_zones(3);
        let mut now = Instant::now();
        let mut leaders = meta(n);
        for (op, key, dt, p, flag) in steps {
            now += Duration::from_millis(dt);
            let p = p % n;
            match op {
                0 => {
                    leaders[p as usize].leader = if flag { None } else { Some(p % 3) };
                    b.update_topic("t", &leaders);
                }
                1 => b.set_draining_brokers(if flag { HashSet::from([p % 3]) } else { HashSet::new() }),
                _ => {
                    let exclude = if flag { vec![p] } else { vec![] };
                    let policy = if op == 5 { KeyPolicy::Preferred } else { KeyPolicy::Strict };
                    let req = PickRequest { topic: "t", key: key.as_deref(), policy, partition: None, exclude: &exclude, allow_probe: !flag };
                    let before = b.status("t", now);
                    let any_usable = (0..n).any(|q| {
                        let br = &b.topics["t"].partitions[q as usize].breaker;
                        !exclude.contains(&q) && br.admissible(&b.cfg.breaker, now) && (!flag || br.is_closed(now))
                    });
                    match b.pick(&req, now) {
                        Ok(pick) => {
                            prop_assert!(!exclude.contains(&pick.partition));
                            prop_assert_ne!(before[pick.partition as usize].state, BreakerState::Open);
                            if let (Some(k), KeyPolicy::Strict) = (key.as_deref(), policy) {
                                prop_assert_eq!(pick.partition, partition_for_key(k, n as usize));
                            }
                            let failure = if op == 2 { Some(FailureKind::Timeout) } else { None };
                            b.complete("t", &pick, failure, now);
                        }
                        Err(PickError::NoHealthyPartition) => prop_assert!(!any_usable),
                        Err(PickError::PartitionUnavailable { partition }) => {
                            prop_assert!(key.is_some());
                            if policy == KeyPolicy::Strict {
                                prop_assert_eq!(partition, partition_for_key(key.as_deref().unwrap(), n as usize));
                            }
                        }
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
            }
        }
        for s in b.status("t", now) {
            prop_assert_eq!(s.in_flight, 0);
        }
    }
}

/// Partition `p` led by broker `p` in `racks[p]`.
fn led_in(racks: &[&str]) -> Vec<PartitionMeta> {
    racks
        .iter()
        .enumerate()
        .map(|(p, r)| PartitionMeta {
            partition: p as i32,
            leader: Some(p as i32),
            leader_rack: Some(r.to_string()),
        })
        .collect()
}

/// A topic whose partition `p` is led in `racks[p]`, on a balancer in az-a among three
/// zones.
fn zoned(racks: &[&str], spillover: crate::SpilloverConfig) -> Balancer {
    let mut b = Balancer::new(BalancerConfig {
        rack: Some("az-a".into()),
        sticky_records: 1,
        spillover,
        ..BalancerConfig::default()
    });
    b.set_zones(3);
    b.update_topic("t", &led_in(racks));
    b
}

/// Unkeyed records placed one at a time at `now`, each completed at once: records per
/// partition.
fn spread(b: &mut Balancer, records: usize, now: Instant) -> Vec<usize> {
    let n = b.partition_count("t").unwrap();
    let mut counts = vec![0; n];
    for _ in 0..records {
        let pick = b.pick(&unkeyed(&[]), now).unwrap();
        counts[pick.partition as usize] += 1;
        b.complete("t", &pick, None, now);
    }
    counts
}

#[test]
fn a_zone_that_leads_too_few_partitions_spills_the_excess_evenly() {
    // az-a leads 1 of 6 and sends a third of the records: its one partition takes what
    // a sixth of the partitions can (half of az-a's records), and the other half goes to
    // the other five in equal parts.
    let layout = ["az-a", "az-b", "az-b", "az-b", "az-c", "az-c"];
    let mut b = zoned(&layout, crate::SpilloverConfig::default());
    assert_eq!(
        spread(&mut b, 6000, Instant::now()),
        [3000, 600, 600, 600, 600, 600]
    );
    // Off, everything stays on the one local partition.
    let off = crate::SpilloverConfig {
        enabled: false,
        ..Default::default()
    };
    let mut b = zoned(&layout, off);
    assert_eq!(spread(&mut b, 600, Instant::now()), [600, 0, 0, 0, 0, 0]);
}

#[test]
fn a_zone_whose_partitions_carry_its_share_stays_local() {
    // 2 of 6 carry a third: all local, in turn.
    let layout = ["az-a", "az-b", "az-a", "az-b", "az-c", "az-c"];
    let mut b = zoned(&layout, crate::SpilloverConfig::default());
    assert_eq!(spread(&mut b, 600, Instant::now()), [300, 0, 300, 0, 0, 0]);
    // A zone that says it sends half of the records spills a third of them.
    let half = crate::SpilloverConfig {
        zone_share_percent: Some(50),
        ..Default::default()
    };
    let mut b = zoned(&layout, half);
    assert_eq!(
        spread(&mut b, 600, Instant::now()),
        [200, 50, 200, 50, 50, 50]
    );
}

#[test]
fn spillover_follows_the_healthy_partitions() {
    // az-a leads 2 of 6, but one of them is open: 1 of 5 movable, against a third.
    let layout = ["az-a", "az-b", "az-a", "az-b", "az-c", "az-c"];
    let mut b = zoned(&layout, crate::SpilloverConfig::default());
    let now = Instant::now();
    trip(&mut b, 2, now);
    let counts = spread(&mut b, 5000, now);
    assert_eq!(counts[2], 0, "{counts:?}");
    // (1/5) / (1/3) = 3/5 local.
    assert_eq!(counts[0], 3000, "{counts:?}");
    assert_eq!(&counts[3..], [500, 500, 500], "{counts:?}");
    assert_eq!(counts[1], 500, "{counts:?}");
}

#[test]
fn a_spill_run_sticks_like_a_local_one() {
    let layout = ["az-a", "az-b", "az-b", "az-b", "az-c", "az-c"];
    let mut b = Balancer::new(BalancerConfig {
        rack: Some("az-a".into()),
        sticky_records: 10,
        ..BalancerConfig::default()
    });
    b.set_zones(3);
    b.update_topic("t", &led_in(&layout));
    let now = Instant::now();
    let picks: Vec<i32> = (0..40)
        .map(|_| {
            let pick = b.pick(&unkeyed(&[]), now).unwrap();
            b.complete("t", &pick, None, now);
            pick.partition
        })
        .collect();
    // Runs of ten: local, then spilled, in turn.
    for run in picks.chunks(10) {
        assert!(run.iter().all(|p| *p == run[0]), "{picks:?}");
    }
    assert_eq!(picks[0], 0);
    assert_ne!(picks[10], 0);
    assert_eq!(picks[20], 0);
    assert_ne!(picks[30], 0);
}

#[test]
fn zone_share_percent_must_be_between_1_and_100() {
    for bad in [0, 101] {
        let cfg = crate::SpilloverConfig {
            zone_share_percent: Some(bad),
            ..Default::default()
        };
        let e = cfg.validate().expect_err("out of range");
        assert!(e.contains("spillover.zone_share_percent"), "{e}");
    }
}

#[test]
fn nothing_spills_once_the_zone_can_carry_its_share_again() {
    // 1 of 6 local: local, then a spill is due.
    let mut b = zoned(
        &["az-a", "az-b", "az-b", "az-b", "az-c", "az-c"],
        crate::SpilloverConfig::default(),
    );
    assert_eq!(spread(&mut b, 1, Instant::now()), [1, 0, 0, 0, 0, 0]);
    // Partition 1's leader moves to az-a: 2 of 6 carry a third, and the spill owed goes.
    b.update_topic(
        "t",
        &led_in(&["az-a", "az-a", "az-b", "az-b", "az-c", "az-c"]),
    );
    assert_eq!(spread(&mut b, 10, Instant::now()), [5, 5, 0, 0, 0, 0]);
}

#[test]
fn a_local_run_ends_when_its_leader_leaves_the_zone() {
    let racks = |moved: Option<usize>| {
        let mut racks = ["az-a", "az-a", "az-b", "az-b", "az-c", "az-c"];
        if let Some(p) = moved {
            racks[p] = "az-b";
        }
        led_in(&racks)
    };
    let mut b = Balancer::new(BalancerConfig {
        rack: Some("az-a".into()),
        sticky_records: 10,
        ..BalancerConfig::default()
    });
    b.set_zones(3);
    b.update_topic("t", &racks(None));
    let now = Instant::now();
    let first = b.pick(&unkeyed(&[]), now).unwrap();
    b.complete("t", &first, None, now);
    assert!(first.local);
    b.update_topic("t", &racks(Some(first.partition as usize)));
    let next = b.pick(&unkeyed(&[]), now).unwrap();
    assert!(next.local, "{next:?}");
    assert_ne!(next.partition, first.partition);
}
