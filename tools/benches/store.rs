//! Tag store benches: update throughput vs a dashmap baseline, bytes per entity, restore time.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::hint::black_box;
use std::time::{Duration, Instant};
use veto::event::{Aggregate, Field};
use veto::store::{FeatureInput, FeatureSpec, Observation, StoreConfig, TagStore};
use veto_tools::kit::process::{cpu_seconds, dir_bytes, rss_bytes};

const KEYS_PER_KIND: u64 = 200_000;
const EVENTS: usize = 100_000;

/// One synthetic event: five entity values (card, user, device, ip, merchant) and an amount.
struct Event {
    time_ms: i64,
    entities: [String; 5],
    amount: f64,
}

fn feature(id: u64, agg: Aggregate, by: Field, window_ms: u64) -> FeatureSpec {
    FeatureSpec {
        id,
        agg,
        by,
        window_ms,
        resolution_ms: window_ms / 60,
    }
}

/// Eight features over the five entities, like the reference rule set.
fn features() -> [FeatureSpec; 8] {
    const M10: u64 = 600_000;
    const H1: u64 = 3_600_000;
    const H24: u64 = 86_400_000;
    [
        feature(1, Aggregate::Count, Field::CardId, M10),
        feature(2, Aggregate::Sum, Field::CardId, H1),
        feature(3, Aggregate::Max, Field::CardId, H24),
        feature(4, Aggregate::Distinct, Field::UserId, H24),
        feature(5, Aggregate::Count, Field::UserId, H1),
        feature(6, Aggregate::Count, Field::DeviceId, H1),
        feature(7, Aggregate::Distinct, Field::Ip, H1),
        feature(8, Aggregate::Sum, Field::MerchantId, M10),
    ]
}

/// Entity slot (index into `Event::entities`) and observation of each feature.
fn inputs<'e>(e: &'e Event) -> [FeatureInput<'e>; 8] {
    let input = |slot: usize, observation| FeatureInput {
        entity: Some(e.entities[slot].as_str()),
        counted: true,
        observation,
    };
    [
        input(0, Observation::Count),
        input(0, Observation::Num(e.amount)),
        input(0, Observation::Num(e.amount)),
        input(1, Observation::Item(&e.entities[2])),
        input(1, Observation::Count),
        input(2, Observation::Count),
        input(3, Observation::Item(&e.entities[0])),
        input(4, Observation::Num(e.amount)),
    ]
}

fn workload(seed: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(KEYS_PER_KIND as f64, 1.1).expect("valid zipf");
    let prefixes = ["card", "user", "dev", "ip", "mer"];
    (0..EVENTS)
        .map(|i| Event {
            time_ms: 1_700_000_000_000 + i as i64 * 5,
            entities: prefixes.map(|p| format!("{p}-{}", zipf.sample(&mut rng) as u64)),
            amount: f64::from(rng.random_range(100u32..100_000)) / 100.0,
        })
        .collect()
}

/// Per entity: for each feature id, its sorted (bucket, count, sum) list.
type DashEntity = Vec<(u64, Vec<(i64, u32, f64)>)>;

/// The same per-entity work on `dashmap`: sorted (bucket, count, sum) lists per feature.
#[derive(Default)]
struct DashStore {
    maps: [DashMap<Box<str>, DashEntity, ahash::RandomState>; 5],
}

impl DashStore {
    fn update(&self, e: &Event, specs: &[FeatureSpec; 8], out: &mut [Option<f64>; 8]) {
        let slots = [0usize, 0, 0, 1, 1, 2, 3, 4];
        for (i, spec) in specs.iter().enumerate() {
            let key = e.entities[slots[i]].as_str();
            let map = &self.maps[slots[i]];
            if !map.contains_key(key) {
                map.insert(key.into(), Vec::new());
            }
            let Some(mut state) = map.get_mut(key) else {
                continue;
            };
            let r = spec.resolution_ms as i64;
            let bucket = e.time_ms / r;
            let cutoff = bucket - (spec.window_ms as i64 / r);
            let features = &mut *state;
            let at = match features.iter().position(|f| f.0 == spec.id) {
                Some(at) => at,
                None => {
                    features.push((spec.id, Vec::new()));
                    features.len() - 1
                }
            };
            let buckets = &mut features[at].1;
            buckets.retain(|b| b.0 > cutoff);
            match buckets.last_mut() {
                Some(b) if b.0 == bucket => {
                    b.1 += 1;
                    b.2 += e.amount;
                }
                _ => buckets.push((bucket, 1, e.amount)),
            }
            out[i] = Some(buckets.iter().map(|b| b.2).sum());
        }
    }
}

fn run_tagstore(store: &TagStore, events: &[Event], specs: &[FeatureSpec; 8]) {
    let mut out = [None; 8];
    for e in events {
        store.update(e.time_ms, specs, &inputs(e), &mut out);
        black_box(&out);
    }
}

fn run_dashmap(store: &DashStore, events: &[Event], specs: &[FeatureSpec; 8]) {
    let mut out = [None; 8];
    for e in events {
        store.update(e, specs, &mut out);
        black_box(&out);
    }
}

/// Runs `work` over the events split between `threads` threads; returns the wall time.
fn timed_split(threads: usize, events: &[Event], work: impl Fn(&[Event]) + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in events.chunks(events.len().div_ceil(threads)) {
            let work = &work;
            scope.spawn(move || work(chunk));
        }
    });
    started.elapsed()
}

fn bench_updates(c: &mut Criterion) {
    let events = workload(7);
    let specs = features();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TagStore::open(StoreConfig {
        data_dir: dir.path().to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("open store");
    let dash = DashStore::default();
    let mut group = c.benchmark_group("store_update");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for threads in [1usize, 2] {
        group.bench_with_input(BenchmarkId::new("tagstore", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| timed_split(t, &events, |chunk| run_tagstore(&store, chunk, &specs)))
                    .sum()
            })
        });
        group.bench_with_input(BenchmarkId::new("dashmap", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| timed_split(t, &events, |chunk| run_dashmap(&dash, chunk, &specs)))
                    .sum()
            })
        });
    }
    group.finish();
}

/// Bytes per card entity holding three windowed features (count 10m, sum 1h, distinct 24h),
/// two events each, from the store's accounting and from RSS growth, at
/// `VETO_BENCH_BYTES_ENTITIES` entities (default 10M, the scale: a hash table's load,
/// and so its bytes per entity, depends on where the count falls between two doublings).
fn report_bytes_per_entity() {
    let n = env_usize("VETO_BENCH_BYTES_ENTITIES", 10_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rss_before = rss_bytes();
    let store = TagStore::open(StoreConfig {
        data_dir: dir.path().to_path_buf(),
        memory_budget_bytes: 8 << 30,
        ..StoreConfig::default()
    })
    .expect("open store");
    let specs = [
        feature(1, Aggregate::Count, Field::CardId, 600_000),
        feature(2, Aggregate::Sum, Field::CardId, 3_600_000),
        feature(3, Aggregate::Distinct, Field::CardId, 86_400_000),
    ];
    let mut out = [None; 3];
    for round in 0..2i64 {
        for i in 0..n {
            let card = format!("card-{i:010}");
            let device = format!("dev-{}", i as i64 % 3 + round);
            let input = |observation| FeatureInput {
                entity: Some(card.as_str()),
                counted: true,
                observation,
            };
            let inputs = [
                input(Observation::Count),
                input(Observation::Num(12.34)),
                input(Observation::Item(&device)),
            ];
            store.update(1_700_000_000_000 + round * 1_000, &specs, &inputs, &mut out);
        }
    }
    let stats = store.stats();
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    println!(
        "bytes per entity (3 windowed features, 2 events, 15-byte key): accounted {:.1} B, rss {:.1} B ({} entities)",
        stats.accounted_bytes as f64 / n as f64,
        rss_growth as f64 / n as f64,
        stats.entities_in_memory
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Restore time of a checkpoint of `VETO_BENCH_RESTORE_ENTITIES` card entities (default 10M),
/// each with the three windowed features of the bytes-per-entity report, on real RocksDB under
/// the temp dir (removed afterwards). The checkpoint is written in steps of 1M entities under a
/// 1 GiB budget (clean entities leave memory); `VETO_BENCH_RESTORE_REWRITES` (default 0) more
/// passes update every entity again, so the checkpoint files overlap like a live run's. Then
/// the store is reopened with `VETO_BENCH_RESTORE_BUDGET_MB` (default 8192, enough to load all
/// 10M) and `restore` is timed.
fn report_restore_time() {
    let n = env_usize("VETO_BENCH_RESTORE_ENTITIES", 10_000_000);
    let rewrites = env_usize("VETO_BENCH_RESTORE_REWRITES", 0);
    let budget_mb = env_usize("VETO_BENCH_RESTORE_BUDGET_MB", 8192) as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        memory_budget_bytes: 1 << 30,
        ..StoreConfig::default()
    };
    let specs = [
        feature(1, Aggregate::Count, Field::CardId, 600_000),
        feature(2, Aggregate::Sum, Field::CardId, 3_600_000),
        feature(3, Aggregate::Distinct, Field::CardId, 86_400_000),
    ];
    let written = Instant::now();
    {
        let store = TagStore::open(cfg.clone()).expect("open store");
        let mut out = [None; 3];
        for i in (0..=rewrites).flat_map(|_| 0..n) {
            let card = format!("card-{i:010}");
            let device = format!("dev-{}", i % 7);
            let input = |observation| FeatureInput {
                entity: Some(card.as_str()),
                counted: true,
                observation,
            };
            let inputs = [
                input(Observation::Count),
                input(Observation::Num(12.34)),
                input(Observation::Item(&device)),
            ];
            store.update(
                1_700_000_000_000 + (i % 1000) as i64,
                &specs,
                &inputs,
                &mut out,
            );
            if (i + 1) % 1_000_000 == 0 || i + 1 == n {
                store.checkpoint(&[], b"timers").expect("checkpoint");
            }
        }
        store.flush().expect("flush");
    }
    let disk_bytes = dir_bytes(dir.path());
    println!(
        "restore setup: {n} entities checkpointed ({} passes) in {:.1} s, {:.0} MB on disk",
        rewrites + 1,
        written.elapsed().as_secs_f64(),
        disk_bytes as f64 / 1e6
    );
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let store = TagStore::open(StoreConfig {
        memory_budget_bytes: budget_mb << 20,
        ..cfg
    })
    .expect("reopen");
    let restored = store.restore().expect("restore").expect("a checkpoint");
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let stats = store.stats();
    println!(
        "restore (open + restore) of {} entities: {seconds:.2} s, {:.0} entities/s, {cpu:.1} s cpu (load {}); {} in memory ({:.0} MB accounted, budget {budget_mb} MiB)",
        restored.entities,
        restored.entities as f64 / seconds,
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
        stats.entities_in_memory,
        stats.accounted_bytes as f64 / 1e6
    );
    drop(store);
    let check = Instant::now();
    drop(dir);
    println!(
        "removed the restore bench dir in {:.1} s",
        check.elapsed().as_secs_f64()
    );
}

criterion_group!(benches, bench_updates);

fn main() {
    // VETO_BENCH_ONLY=bytes|restore|updates runs one part; VETO_BENCH_ONLY_UPDATES=1 = updates
    let only = std::env::var("VETO_BENCH_ONLY").unwrap_or_else(|_| {
        if std::env::var_os("VETO_BENCH_ONLY_UPDATES").is_some() {
            "updates".into()
        } else {
            String::new()
        }
    });
    let runs = |part: &str| only.is_empty() || only == part;
    if runs("bytes") {
        report_bytes_per_entity();
    }
    if runs("restore") {
        report_restore_time();
    }
    if runs("updates") {
        benches();
    }
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
