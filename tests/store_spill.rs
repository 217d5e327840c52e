//! Spill, read-back and checkpoint round trip of many entities under a small memory budget.

use veto::event::{Aggregate, Field};
use veto::store::{
    FeatureInput, FeatureSpec, Observation, PartitionOffset, StoreConfig, StoreError, TagStore,
};

const BUDGET: u64 = 24 << 20;

/// Entities written: 200k by default so CI stays under a minute in debug (1M passes in ~4 min on
/// a shared 2-core box); set `VETO_SPILL_ENTITIES=1000000` for the full run.
fn entity_count() -> usize {
    std::env::var("VETO_SPILL_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn specs() -> [FeatureSpec; 3] {
    let spec = |id, agg| FeatureSpec {
        id,
        agg,
        by: Field::CardId,
        window_ms: 3_600_000,
        resolution_ms: 60_000,
    };
    [
        spec(1, Aggregate::Count),
        spec(2, Aggregate::Sum),
        spec(3, Aggregate::Max),
    ]
}

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        shards: 64,
        memory_budget_bytes: BUDGET,
        data_dir: dir.to_path_buf(),
        ..StoreConfig::default()
    }
}

fn card(i: usize) -> String {
    format!("card-{i:09}")
}

/// Events of entity i: 1 + i % 3 of them, amounts in cents.
fn amounts(i: usize) -> Vec<i64> {
    (0..1 + i % 3)
        .map(|j| ((i * 31 + j * 7) % 100_000) as i64)
        .collect()
}

fn expected(i: usize) -> [Option<f64>; 3] {
    let a = amounts(i);
    let sum: i64 = a.iter().sum();
    let max = a.iter().copied().max().unwrap_or(0);
    [
        Some(a.len() as f64),
        Some((sum * 100) as f64 / 10_000.0),
        Some((max * 100) as f64 / 10_000.0),
    ]
}

fn read_all(store: &TagStore, n: usize, at_ms: i64) {
    let specs = specs();
    for i in 0..n {
        let got = specs.map(|s| store.feature_value(&s, &card(i), at_ms));
        assert_eq!(got, expected(i), "entity {i}");
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn many_entities_spill_read_back_and_survive_a_restart() {
    let n = entity_count();
    let dir = tempfile::tempdir().unwrap();
    let specs = specs();
    let base_rss = rss_bytes();
    let t0 = 1_700_000_000_000i64;
    {
        let store = TagStore::open(config(dir.path())).unwrap();
        let mut out = [None; 3];
        let mut peak_accounted = 0;
        for round in 0..3 {
            for i in 0..n {
                let Some(&amount) = amounts(i).get(round) else {
                    continue;
                };
                let key = card(i);
                let value = amount as f64 / 100.0;
                let inputs = [
                    FeatureInput {
                        entity: Some(&key),
                        counted: true,
                        observation: Observation::Count,
                    },
                    FeatureInput {
                        entity: Some(&key),
                        counted: true,
                        observation: Observation::Num(value),
                    },
                    FeatureInput {
                        entity: Some(&key),
                        counted: true,
                        observation: Observation::Num(value),
                    },
                ];
                store.update(t0 + round as i64 * 1_000, &specs, &inputs, &mut out);
                if i % 65_536 == 0 {
                    peak_accounted = peak_accounted.max(store.stats().accounted_bytes);
                }
            }
        }
        let stats = store.stats();
        let rss_growth = rss_bytes().saturating_sub(base_rss);
        eprintln!(
            "entities={n} in_memory={} spilled={} accounted={} peak_accounted={peak_accounted} budget={BUDGET} rss_growth={rss_growth}",
            stats.entities_in_memory, stats.entities_spilled, stats.accounted_bytes
        );
        assert!(stats.entities_spilled > 0, "nothing spilled");
        assert_eq!(stats.entities_in_memory + stats.entities_spilled, n as u64);
        assert!(peak_accounted <= BUDGET && stats.accounted_bytes <= BUDGET);
        // RocksDB may hold up to 3 column families x 2 memtables x 8 MiB plus an 8 MiB cache
        let rocksdb_allowance = 56 << 20;
        assert!(
            rss_growth <= BUDGET + BUDGET / 2 + rocksdb_allowance,
            "rss grew by {rss_growth} bytes"
        );

        read_all(&store, n, t0 + 2_000);
        let after_read = store.stats();
        eprintln!(
            "after read-back: in_memory={} spilled={} accounted={} rss_growth={}",
            after_read.entities_in_memory,
            after_read.entities_spilled,
            after_read.accounted_bytes,
            rss_bytes().saturating_sub(base_rss)
        );
        assert!(after_read.accounted_bytes <= BUDGET);

        let offsets = [PartitionOffset {
            topic: "payments".into(),
            partition: 3,
            offset: 12_345,
        }];
        let written = store.checkpoint(&offsets, b"timer-blob").unwrap();
        eprintln!("checkpoint: {written:?}");
        assert_eq!(written.entities_total, n as u64);
        // every entity again: clean ones leave memory for their checkpoint copy and come back
        read_all(&store, n, t0 + 2_000);
    }
    let store = TagStore::open(config(dir.path())).unwrap();
    let started = std::time::Instant::now();
    let restored = store.restore().unwrap().unwrap();
    eprintln!("restore of {n} entities took {:?}", started.elapsed());
    assert_eq!(restored.entities, n);
    assert_eq!(restored.timers, b"timer-blob");
    assert_eq!(restored.offsets[0].offset, 12_345);
    read_all(&store, n, t0 + 2_000);
    assert!(store.stats().accounted_bytes <= BUDGET);
}

#[test]
fn a_corrupted_checkpoint_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let specs = specs();
    {
        let store = TagStore::open(config(dir.path())).unwrap();
        let mut out = [None; 3];
        for i in 0..20_000 {
            let key = card(i);
            let inputs = [0, 1, 2].map(|_| FeatureInput {
                entity: Some(&key),
                counted: true,
                observation: Observation::Num(i as f64),
            });
            store.update(1_000, &specs, &inputs, &mut out);
        }
        store.checkpoint(&[], &[]).unwrap();
        store.flush().unwrap();
    }
    let mut tables: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    tables.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let largest = tables.last().expect("an sst file");
    let mut bytes = std::fs::read(largest).unwrap();
    let middle = bytes.len() / 3;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(largest, bytes).unwrap();

    let result = TagStore::open(config(dir.path())).and_then(|store| store.restore());
    match result {
        Err(StoreError::CorruptCheckpoint(reason)) => eprintln!("rejected: {reason}"),
        other => panic!("corruption not reported: {other:?}"),
    }
}
