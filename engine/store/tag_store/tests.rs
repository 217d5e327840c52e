//! Tests of the tag store: updates, tags, spill, checkpoints (incl. exactly-once), restore.

use super::spill::{drop_large_buffers, entity_budget, KEPT_BUFFER_BYTES};
use super::{entity_key, Shard, TagStore};
use crate::event::{Aggregate, Field, TagUpdate};
use crate::store::{
    FeatureInput, FeaturePlan, FeatureSpec, Observation, PartitionOffset, StoreConfig, StoreError,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn the_budget_covers_rocksdb_and_an_allocator_reserve() {
    const MIB: u64 = 1 << 20;
    assert_eq!(entity_budget(160 * MIB, 0), 128 * MIB);
    assert_eq!(entity_budget(160 * MIB, 10 * MIB), 120 * MIB);
    // RocksDB over the budget still leaves a quarter of it for entities.
    assert_eq!(entity_budget(160 * MIB, 200 * MIB), 40 * MIB);
}

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        shards: 8,
        data_dir: dir.to_path_buf(),
        ..StoreConfig::default()
    }
}

fn spec(id: u64, agg: Aggregate, by: Field) -> FeatureSpec {
    FeatureSpec {
        id,
        agg,
        by,
        window_ms: 600_000,
        resolution_ms: 10_000,
    }
}

/// The offsets of a checkpoint that consumed `payments` partition 0 up to `next`.
fn offsets(next: i64) -> Vec<PartitionOffset> {
    vec![PartitionOffset {
        topic: "payments".into(),
        partition: 0,
        offset: next,
    }]
}

/// Counts one event of card `c1` at t = 1 s.
fn count_card_c1(store: &TagStore, specs: &[FeatureSpec; 1]) {
    let mut out = [None];
    store.update(
        1_000,
        specs,
        &[input(Some("c1"), Observation::Count)],
        &mut out,
    );
}

fn input<'a>(entity: Option<&'a str>, observation: Observation<'a>) -> FeatureInput<'a> {
    FeatureInput {
        entity,
        counted: true,
        observation,
    }
}

#[test]
fn update_counts_each_feature_and_skips_missing_entities() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    let specs = [
        spec(1, Aggregate::Count, Field::CardId),
        spec(2, Aggregate::Sum, Field::CardId),
        spec(3, Aggregate::Distinct, Field::UserId),
        spec(4, Aggregate::Count, Field::Ip),
    ];
    let mut out = [None; 4];
    for (i, device) in ["d1", "d2", "d1"].iter().enumerate() {
        let inputs = [
            input(Some("card-1"), Observation::Count),
            input(Some("card-1"), Observation::Num(10.25)),
            input(Some("user-1"), Observation::Item(device)),
            input(None, Observation::Count),
        ];
        store.update(1_000 + i as i64, &specs, &inputs, &mut out);
    }
    assert_eq!(out, [Some(3.0), Some(30.75), Some(2.0), None]);
    assert_eq!(store.feature_value(&specs[0], "card-1", 1_002), Some(3.0));
    assert_eq!(store.feature_value(&specs[0], "card-1", 700_000), Some(0.0));
    assert_eq!(store.feature_value(&specs[0], "nobody", 0), Some(0.0));
    assert_eq!(store.stats().entities_in_memory, 2);
}

#[test]
fn planned_update_reports_each_entity_once_with_its_live_tags_and_splits_differing_entities() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    let specs = [
        spec(1, Aggregate::Count, Field::CardId),
        spec(2, Aggregate::Count, Field::UserId),
        spec(3, Aggregate::Sum, Field::CardId),
    ];
    let tag = |tag: &str, expires_at_ms| TagUpdate {
        entity: Field::UserId,
        value: "u1".into(),
        tag: tag.into(),
        expires_at_ms,
        remove: false,
    };
    assert!(store.apply_tag(&tag("fraudster", None)));
    assert!(store.apply_tag(&tag("expired", Some(500))));
    let plan = FeaturePlan::new(&specs);
    let observations = [
        Observation::Count,
        Observation::Count,
        Observation::Num(2.5),
    ];
    let mut out = [None; 3];
    let mut seen = Vec::new();
    store.update_planned(
        1_000,
        &plan,
        |kind| match kind {
            Field::CardId => Some("c1"),
            Field::UserId => Some("u1"),
            _ => None,
        },
        |i| observations[i],
        &mut out,
        |kind, tags| seen.push((kind, tags.names().map(String::from).collect::<Vec<_>>())),
    );
    assert_eq!(out, [Some(1.0), Some(1.0), Some(2.5)]);
    assert_eq!(
        seen,
        [
            (Field::CardId, vec![]),
            (Field::UserId, vec!["fraudster".to_string()])
        ]
    );
    // features of one kind naming two entities update each (the generic `update` path)
    let inputs = [
        input(Some("c1"), Observation::Count),
        input(None, Observation::Count),
        input(Some("c2"), Observation::Num(1.0)),
    ];
    store.update(2_000, &specs, &inputs, &mut out);
    assert_eq!(out, [Some(2.0), None, Some(1.0)]);
    assert_eq!(store.feature_value(&specs[2], "c1", 2_000), Some(2.5));
}

#[test]
fn features_with_one_definition_count_an_event_once_and_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    // the same definition under two names (equal ids), around another feature of the kind
    let specs = [
        spec(1, Aggregate::Count, Field::CardId),
        spec(2, Aggregate::Sum, Field::CardId),
        spec(1, Aggregate::Count, Field::CardId),
    ];
    let plan = FeaturePlan::new(&specs);
    let observations = [
        Observation::Count,
        Observation::Num(2.0),
        Observation::Count,
    ];
    let mut out = [None; 3];
    for t in [1_000, 2_000] {
        store.update_planned(
            t,
            &plan,
            |_| Some("c1"),
            |i| observations[i],
            &mut out,
            |_, _| {},
        );
    }
    assert_eq!(out, [Some(2.0), Some(4.0), Some(2.0)]);
    let inputs = observations.map(|o| input(Some("c1"), o));
    store.update(3_000, &specs, &inputs, &mut out);
    assert_eq!(out, [Some(3.0), Some(6.0), Some(3.0)]);
}

#[test]
fn many_threads_on_overlapping_keys_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    let specs = [
        spec(1, Aggregate::Count, Field::CardId),
        spec(2, Aggregate::Count, Field::UserId),
        spec(3, Aggregate::Sum, Field::CardId),
    ];
    let threads = 8;
    let per_thread = 5_000;
    let keys = 37;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let store = &store;
            let specs = &specs;
            scope.spawn(move || {
                let mut out = [None; 3];
                for i in 0..per_thread {
                    let card = format!("c{}", (i * 7 + t) % keys);
                    let user = format!("u{}", (i + t * 3) % keys);
                    let inputs = [
                        input(Some(&card), Observation::Count),
                        input(Some(&user), Observation::Count),
                        input(Some(&card), Observation::Num(0.01)),
                    ];
                    store.update(1_000, specs, &inputs, &mut out);
                }
            });
        }
    });
    let mut cards = 0.0;
    let mut users = 0.0;
    let mut cents = 0.0;
    for k in 0..keys {
        cards += store
            .feature_value(&specs[0], &format!("c{k}"), 1_000)
            .unwrap();
        users += store
            .feature_value(&specs[1], &format!("u{k}"), 1_000)
            .unwrap();
        cents += store
            .feature_value(&specs[2], &format!("c{k}"), 1_000)
            .unwrap()
            * 100.0;
    }
    let events = (threads * per_thread) as f64;
    assert_eq!(cards, events);
    assert_eq!(users, events);
    assert_eq!(cents.round(), events);
}

#[test]
fn a_new_tag_beyond_the_per_entity_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    let tag = |tag: &str, remove| TagUpdate {
        entity: Field::UserId,
        value: "u1".into(),
        tag: tag.into(),
        expires_at_ms: None,
        remove,
    };
    for i in 0..crate::store::MAX_TAGS {
        assert!(store.apply_tag(&tag(&format!("t{i}"), false)));
    }
    assert!(!store.apply_tag(&tag("one-too-many", false)));
    assert!(!store.has_tag(Field::UserId, "u1", "one-too-many", 0));
    // a held tag is renewed, a removal makes room
    assert!(store.apply_tag(&tag("t0", false)));
    assert!(store.apply_tag(&tag("t1", true)));
    assert!(store.apply_tag(&tag("one-too-many", false)));
    assert!(store.has_tag(Field::UserId, "u1", "one-too-many", 0));
}

#[test]
fn tags_expire_and_survive_spill_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    let tag = |tag: &str, expires_at_ms, remove| TagUpdate {
        entity: Field::UserId,
        value: "u1".into(),
        tag: tag.into(),
        expires_at_ms,
        remove,
    };
    store.apply_tag(&tag("trusted", Some(5_000), false));
    store.apply_tag(&tag("vip", None, false));
    assert!(store.has_tag(Field::UserId, "u1", "trusted", 4_999));
    assert!(!store.has_tag(Field::UserId, "u1", "trusted", 5_000));
    assert!(!store.has_tag(Field::CardId, "u1", "trusted", 0));
    store.apply_tag(&tag("vip", None, true));
    assert!(!store.has_tag(Field::UserId, "u1", "vip", 0));
    store.checkpoint(&[], b"timers").unwrap();
    drop(store);
    let store = TagStore::open(config(dir.path())).unwrap();
    let restored = store.restore().unwrap().unwrap();
    assert_eq!(restored.timers, b"timers");
    assert_eq!(restored.entities, 1);
    assert!(store.has_tag(Field::UserId, "u1", "trusted", 10));
}

/// The exactly-once two-phase checkpoint: a failed publish leaves the previous checkpoint
/// in force plus a pending copy, which the next start applies or discards.
#[test]
fn pending_checkpoints_apply_only_when_their_transaction_committed() {
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let count_one = |store: &TagStore| count_card_c1(store, &specs);
    for committed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        count_one(&store);
        let mut published = Vec::new();
        store
            .checkpoint_published(&offsets(1), b"t1", &offsets(1), &mut |sequence| {
                published.push(sequence);
                Ok(())
            })
            .unwrap();
        assert_eq!(published, [1], "publish is given the checkpoint's sequence");
        assert_eq!(store.pending_checkpoint().unwrap(), None);

        // The second transaction "crashes": publish fails after the pending copy is written.
        count_one(&store);
        let error = store
            .checkpoint_published(&offsets(2), b"t2", &offsets(2), &mut |sequence| {
                assert_eq!(sequence, 2);
                Err("broker gone".into())
            })
            .unwrap_err();
        assert!(matches!(error, StoreError::NotPublished(_)), "{error}");
        // its transaction may have committed: no later checkpoint may replace it
        let error = store
            .checkpoint_published(&offsets(3), b"t3", &offsets(3), &mut |_| Ok(()))
            .unwrap_err();
        assert!(matches!(error, StoreError::PendingUnsettled), "{error}");
        drop(store);

        let store = TagStore::open(config(dir.path())).unwrap();
        assert_eq!(store.pending_checkpoint().unwrap(), Some((offsets(2), 2)));
        store.resolve_pending(committed).unwrap();
        assert_eq!(store.pending_checkpoint().unwrap(), None);
        let restored = store.restore().unwrap().unwrap();
        let (want_offset, want_timers, want_count) = if committed {
            (2, b"t2", 2.0)
        } else {
            (1, b"t1", 1.0)
        };
        assert_eq!(restored.offsets, offsets(want_offset));
        assert_eq!(restored.timers, want_timers);
        assert_eq!(
            store.feature_value(&specs[0], "c1", 1_000),
            Some(want_count)
        );
    }
}

/// The transaction committed but the file could not be ingested (here: it vanished for a
/// moment): the next checkpoint applies it first, then writes its own on top.
#[test]
fn a_committed_checkpoint_that_failed_to_apply_is_applied_by_the_next() {
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let count_one = |store: &TagStore| count_card_c1(store, &specs);
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    let held = dir.path().join("held.sst");
    let store = TagStore::open(config(dir.path())).unwrap();
    count_one(&store);
    let mut name = None;
    let error = store
        .checkpoint_published(&offsets(1), b"t1", &offsets(1), &mut |_| {
            let file = std::fs::read_dir(&incoming)
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            std::fs::rename(file.path(), &held).unwrap();
            name = Some(file.file_name());
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::Rocks { .. }), "{error}");
    std::fs::rename(&held, incoming.join(name.unwrap())).unwrap();
    count_one(&store);
    store
        .checkpoint_published(&offsets(2), b"t2", &offsets(2), &mut |_| Ok(()))
        .unwrap();
    drop(store);

    let store = TagStore::open(config(dir.path())).unwrap();
    assert_eq!(store.pending_checkpoint().unwrap(), None);
    let restored = store.restore().unwrap().unwrap();
    assert_eq!(restored.offsets, offsets(2));
    assert_eq!(restored.entities, 1);
    assert_eq!(store.feature_value(&specs[0], "c1", 1_000), Some(2.0));
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
}

#[test]
fn sweep_deletes_idle_entities_and_purges_tags() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    cfg.expiry_grace_ms = 0;
    let store = TagStore::open(cfg).unwrap();
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let mut out = [None];
    store.update(
        0,
        &specs,
        &[input(Some("old"), Observation::Count)],
        &mut out,
    );
    store.apply_tag(&TagUpdate {
        entity: Field::CardId,
        value: "tagged".into(),
        tag: "t".into(),
        expires_at_ms: Some(100_000),
        remove: false,
    });
    store.update(
        650_000,
        &specs,
        &[input(Some("new"), Observation::Count)],
        &mut out,
    );
    let stats = store.sweep();
    assert_eq!(stats.entities_in_memory, 1, "old and tagged are idle");
    assert_eq!(store.feature_value(&specs[0], "new", 650_000), Some(1.0));
}

#[test]
fn retained_features_drop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    let specs = [
        spec(1, Aggregate::Count, Field::CardId),
        spec(2, Aggregate::Count, Field::CardId),
    ];
    let inputs = [
        input(Some("c"), Observation::Count),
        input(Some("c"), Observation::Count),
    ];
    let mut out = [None; 2];
    store.update(0, &specs, &inputs, &mut out);
    let before = store.stats().accounted_bytes;
    store.retain_features(&[2u64].into_iter().collect());
    assert!(store.stats().accounted_bytes < before);
    assert_eq!(store.feature_value(&specs[0], "c", 0), Some(0.0));
    assert_eq!(store.feature_value(&specs[1], "c", 0), Some(1.0));
}

#[test]
fn damaged_checkpoints_are_rejected_and_nothing_stays_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    {
        let store = TagStore::open(config(dir.path())).unwrap();
        let mut out = [None];
        for card in ["a", "b", "c"] {
            store.update(
                0,
                &specs,
                &[input(Some(card), Observation::Count)],
                &mut out,
            );
        }
        store.checkpoint(&[], &[]).unwrap();
    }
    // flip a byte of one checkpointed entity behind the store's back
    {
        let cfs = [
            crate::store::disk::CF_SPILL,
            crate::store::disk::CF_CHECKPOINT_ENTITIES,
            crate::store::disk::CF_CHECKPOINT_META,
        ];
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
        let cf = db
            .cf_handle(crate::store::disk::CF_CHECKPOINT_ENTITIES)
            .unwrap();
        let key = entity_key(Field::CardId as u8, "b");
        let mut value = db.get_cf(cf, &key).unwrap().unwrap();
        value[2] ^= 0x40;
        db.put_cf(cf, &key, value).unwrap();
    }
    let store = TagStore::open(config(dir.path())).unwrap();
    let error = store.restore().unwrap_err();
    assert!(matches!(error, StoreError::CorruptCheckpoint(_)), "{error}");
    assert!(error.to_string().contains("card_id:b"), "{error}");
    assert_eq!(store.stats().entities_in_memory, 0);
}

#[test]
fn missing_entities_are_detected_by_the_manifest_count() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    {
        let store = TagStore::open(config(dir.path())).unwrap();
        let mut out = [None];
        for card in ["a", "b"] {
            store.update(
                0,
                &specs,
                &[input(Some(card), Observation::Count)],
                &mut out,
            );
        }
        store.checkpoint(&[], &[]).unwrap();
    }
    {
        let cfs = [
            crate::store::disk::CF_SPILL,
            crate::store::disk::CF_CHECKPOINT_ENTITIES,
            crate::store::disk::CF_CHECKPOINT_META,
        ];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let cf = db
            .cf_handle(crate::store::disk::CF_CHECKPOINT_ENTITIES)
            .unwrap();
        db.delete_cf(cf, entity_key(Field::CardId as u8, "a"))
            .unwrap();
    }
    let store = TagStore::open(config(dir.path())).unwrap();
    let error = store.restore().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("manifest lists 2 entities but 1"),
        "{error}"
    );
}

#[test]
fn no_checkpoint_restores_nothing_and_open_rejects_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(config(dir.path())).unwrap();
    assert_eq!(store.restore().unwrap(), None);
    drop(store);
    let mut cfg = config(dir.path());
    cfg.shards = 6;
    assert!(matches!(TagStore::open(cfg), Err(StoreError::Config(_))));
}

/// Counts one event of each of `cards` at `at_ms`.
fn count_cards(store: &TagStore, specs: &[FeatureSpec; 1], cards: &[String], at_ms: i64) {
    let mut out = [None];
    for card in cards {
        store.update(
            at_ms,
            specs,
            &[input(Some(card), Observation::Count)],
            &mut out,
        );
    }
}

fn cards(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// Every even-numbered card of `all` counted twice, the others once.
fn assert_evens_counted_twice(store: &TagStore, specs: &[FeatureSpec; 1], all: &[String]) {
    for (i, card) in all.iter().enumerate() {
        let want = if i % 2 == 0 { 2.0 } else { 1.0 };
        assert_eq!(
            store.feature_value(&specs[0], card, 3_000),
            Some(want),
            "{card}"
        );
    }
}

/// A checkpoint written in the background holds exactly the state at its copy, spilled
/// entities included, though entities are counted, read back and spilled again meanwhile.
#[test]
fn a_background_checkpoint_holds_the_state_at_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memory_budget_bytes = 256 << 10;
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let all = cards("card-", 3_000);
    let evens: Vec<String> = all.iter().step_by(2).cloned().collect();
    let thirds: Vec<String> = all.iter().step_by(3).cloned().collect();
    {
        let store = std::sync::Arc::new(TagStore::open(cfg.clone()).unwrap());
        count_cards(&store, &specs, &all, 1_000);
        assert!(store.stats().entities_spilled > 0, "the budget spills");
        store.checkpoint(&offsets(1), b"t1").unwrap();
        count_cards(&store, &specs, &evens, 2_000);
        assert!(store.stats().entities_spilled > 0, "the budget spills");
        store
            .checkpoint_in_background(&offsets(2), b"t2", Duration::ZERO)
            .unwrap();
        // while the file is written (or after): not in the checkpoint
        count_cards(&store, &specs, &thirds, 3_000);
        store.wait_for_background_checkpoint();
        assert_eq!(store.stats().entities_checkpointed, 3_000);
    }
    let store = TagStore::open(cfg).unwrap();
    let restored = store.restore().unwrap().unwrap();
    assert_eq!(restored.offsets, offsets(2));
    assert_eq!(restored.timers, b"t2");
    assert_eq!(restored.entities, 3_000);
    assert_evens_counted_twice(&store, &specs, &all);
}

/// A checkpoint whose file cannot be written (here: its folder is gone) leaves every change
/// for the next one: dirty and new entities, and deletes of idle ones, in either kind of
/// checkpoint; the next one's entity count is exact (restore verifies it).
#[test]
fn a_failed_checkpoint_leaves_everything_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("incoming");
    let mut cfg = config(dir.path());
    cfg.expiry_grace_ms = 0;
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let (old, kept, new) = (cards("old-", 100), cards("kept-", 100), cards("new-", 100));
    {
        let store = std::sync::Arc::new(TagStore::open(cfg.clone()).unwrap());
        count_cards(&store, &specs, &old, 0);
        count_cards(&store, &specs, &kept, 100_000);
        store.checkpoint(&offsets(1), b"t1").unwrap();
        count_cards(&store, &specs, &kept, 650_000);
        count_cards(&store, &specs, &new, 650_000);
        store.sweep(); // the old cards are idle: deleted
        std::fs::remove_dir(&incoming).unwrap();
        store
            .checkpoint_in_background(&offsets(2), b"t2", Duration::ZERO)
            .unwrap();
        store.wait_for_background_checkpoint();
        let error = store.checkpoint(&offsets(2), b"t2").unwrap_err();
        assert!(matches!(error, StoreError::Rocks { .. }), "{error}");
        assert_eq!(
            store.stats().entities_checkpointed,
            200,
            "as after the first"
        );
        std::fs::create_dir(&incoming).unwrap();
        store.checkpoint(&offsets(3), b"t3").unwrap();
    }
    let store = TagStore::open(cfg).unwrap();
    let restored = store.restore().unwrap().unwrap();
    assert_eq!(restored.offsets, offsets(3));
    assert_eq!(restored.entities, 200);
    for (cards, want) in [(&old, 0.0), (&kept, 2.0), (&new, 1.0)] {
        for card in cards {
            let got = store.feature_value(&specs[0], card, 650_000);
            assert_eq!(got, Some(want), "{card}");
        }
    }
}

/// 3,000 cards counted at 1,000 and checkpointed, the even ones counted again at 2,000 (1,500
/// entities dirty), then a snapshot taken; `between` runs before the snapshot is completed,
/// with the store, the feature and the cards. The file holds the 1,500 dirty entities, and the
/// checkpoint restores as the store stood at the snapshot.
fn snapshot_the_evens_around(between: impl FnOnce(&TagStore, &[FeatureSpec; 1], &[String])) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let all = cards("card-", 3_000);
    {
        let store = TagStore::open(cfg.clone()).unwrap();
        count_cards(&store, &specs, &all, 1_000);
        store.checkpoint(&offsets(1), b"t1").unwrap();
        let evens: Vec<String> = all.iter().step_by(2).cloned().collect();
        count_cards(&store, &specs, &evens, 2_000);
        let (snapshot, view) = store.take_snapshot(offsets(2), b"t2".to_vec()).unwrap();
        between(&store, &specs, &all);
        let stats = store.complete_snapshot(snapshot, view, None).unwrap();
        assert_eq!(stats.entities_written, 1_500);
    }
    let store = TagStore::open(cfg).unwrap();
    let restored = store.restore().unwrap().unwrap();
    assert_eq!(restored.offsets, offsets(2));
    assert_eq!(restored.entities, 3_000);
    assert_evens_counted_twice(&store, &specs, &all);
}

/// `count` summed over every shard of `store`.
fn sum_over_shards(store: &TagStore, count: impl Fn(&Shard) -> usize) -> usize {
    (0..store.shards.len()).map(|i| count(&store.lock(i))).sum()
}

/// The file holds the state at the snapshot: entities counted after it, whether dirty at the
/// snapshot or not, are copied before they change (spilled ones: see
/// `a_background_checkpoint_holds_the_state_at_its_copy`).
#[test]
fn a_checkpoint_holds_the_state_at_its_snapshot() {
    snapshot_the_evens_around(|store, specs, all| {
        // every card after the snapshot, before the writer copies anything
        count_cards(store, specs, all, 3_000);
    });
}

/// The writer copies a shard's part in steps, releasing the lock between them: an entity
/// decided on between two steps is copied once, as it was at the snapshot, whether its step
/// came before the access or after it.
#[test]
fn entities_accessed_between_the_writers_steps_are_copied_once_at_their_snapshot() {
    snapshot_the_evens_around(|store, specs, all| {
        let keys: Vec<_> = (0..store.shards.len())
            .map(|i| store.lock(i).snapshot_keys())
            .collect();
        assert_eq!(keys.iter().map(Vec::len).sum::<usize>(), 1_500);
        for (i, keys) in keys.iter().enumerate() {
            store.lock(i).capture_entities(&keys[..keys.len() / 2]);
        }
        // every card between the steps
        count_cards(store, specs, all, 3_000);
        for (i, keys) in keys.iter().enumerate() {
            store.lock(i).capture_entities(&keys[keys.len() / 2..]);
        }
        let copied = sum_over_shards(store, |shard| shard.capture.len());
        assert_eq!(copied, 1_500, "each entity of the snapshot copied once");
    });
}

/// A sweep while a checkpoint is being captured copies what it deletes first (as an access
/// does) instead of capturing whole shards: the file holds the idle entities as they were at
/// the snapshot, and the next checkpoint deletes them.
#[test]
fn a_sweep_during_a_capture_copies_what_it_deletes_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.expiry_grace_ms = 0;
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let (old, new) = (cards("old-", 100), cards("new-", 100));
    {
        let store = TagStore::open(cfg.clone()).unwrap();
        count_cards(&store, &specs, &old, 0);
        let (snapshot, view) = store.take_snapshot(offsets(1), b"t1".to_vec()).unwrap();
        count_cards(&store, &specs, &new, 650_000);
        let swept = store.sweep();
        assert_eq!(swept.entities_in_memory, 100, "the old cards are idle");
        assert!(
            (0..store.shards.len()).all(|i| store.lock(i).uncaptured),
            "the sweep captured no whole shard"
        );
        let stats = store.complete_snapshot(snapshot, view, None).unwrap();
        assert_eq!((stats.entities_written, stats.entities_total), (100, 100));
    }
    {
        let store = TagStore::open(cfg.clone()).unwrap();
        let restored = store.restore().unwrap().unwrap();
        assert_eq!(restored.entities, 100, "the old cards, at the snapshot");
        for card in &old {
            assert_eq!(store.feature_value(&specs[0], card, 0), Some(1.0), "{card}");
        }
    }
}

/// A sweep that purges an expired tag from an entity of the snapshot copies the entity first
/// and once: the writer does not copy its purged state again, and the file holds the tag.
#[test]
fn a_tag_purged_during_a_capture_stays_in_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.expiry_grace_ms = 0;
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    let tagged = || TagUpdate {
        entity: Field::CardId,
        value: "tagged".into(),
        tag: "t".into(),
        expires_at_ms: Some(100_000),
        remove: false,
    };
    {
        let store = TagStore::open(cfg.clone()).unwrap();
        store.apply_tag(&tagged());
        count_cards(&store, &specs, &["tagged".to_owned()], 600_000);
        let (snapshot, view) = store.take_snapshot(offsets(1), b"t1".to_vec()).unwrap();
        count_cards(&store, &specs, &cards("new-", 100), 650_000);
        store.sweep(); // the tag expired at 100,000
        assert!(
            !store.has_tag(Field::CardId, "tagged", "t", 50_000),
            "purged"
        );
        let copied = sum_over_shards(&store, |shard| shard.capture.len());
        let left = sum_over_shards(&store, |shard| shard.snapshot_keys().len());
        assert_eq!((copied, left), (1, 0), "copied once, before the purge");
        let stats = store.complete_snapshot(snapshot, view, None).unwrap();
        assert_eq!(stats.entities_written, 1);
    }
    let store = TagStore::open(cfg).unwrap();
    store.restore().unwrap().unwrap();
    assert!(
        store.has_tag(Field::CardId, "tagged", "t", 50_000),
        "as at the snapshot"
    );
}

/// When the budget shrinks below what a peak left (here: set lower after 20,000 entities; in
/// a service, RocksDB's memory and the filter of keys on disk grow), the shard maps' tables
/// shrink with the entities they lose, and the entities keep the memory: without that, the
/// tables alone filled the budget and every new entity was spilled as soon as it came.
#[test]
fn tables_shrink_when_the_budget_does_and_entities_keep_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TagStore::open(config(dir.path())).unwrap();
    let specs = [spec(1, Aggregate::Count, Field::CardId)];
    count_cards(&store, &specs, &cards("peak-", 20_000), 1_000);
    let peak = store.stats();
    assert_eq!(
        (peak.entities_in_memory, peak.entities_spilled),
        (20_000, 0)
    );
    store.cfg.memory_budget_bytes = peak.accounted_bytes / 4;
    store.refresh_budget(0);
    count_cards(&store, &specs, &cards("later-", 4_000), 2_000);
    let after = store.stats();
    assert!(after.entities_spilled > 0, "the budget spills");
    // RocksDB's memory (refreshed as the store evicts) takes its part of the budget too
    let entity_budget = store.shard_budget.load(Ordering::Relaxed) * store.shards.len() as u64;
    assert!(after.accounted_bytes <= entity_budget, "{after:?}");
    // entities hold most of what the filter of keys on disk leaves: a table shrunk to twice
    // its entities costs about as much as they do, so at least a third of the peak's entities
    // that fit in that stay
    let filter: u64 = store
        .shards
        .iter()
        .map(|shard| shard.0.lock().disk_keys.bytes())
        .sum();
    let kept = 20_000 * (entity_budget - filter) / peak.accounted_bytes / 3;
    assert!(after.entities_in_memory >= kept, "{after:?}, want {kept}");
}

#[test]
fn eviction_buffers_are_kept_unless_they_grew_past_the_limit() {
    let mut ages: Vec<u32> = Vec::with_capacity(1024);
    let mut spill = crate::store::disk::SpillBatch::default();
    spill.push(1, b"small", |buf| buf.extend_from_slice(&[0; 100]));
    drop_large_buffers(&mut ages, &mut spill);
    assert!(ages.capacity() >= 1024, "a small age list is kept");
    assert_eq!(spill.len(), 1, "a small batch is kept");

    let mut ages: Vec<u32> = Vec::with_capacity(KEPT_BUFFER_BYTES / 4 + 1);
    spill.push(1, b"large", |buf| {
        buf.resize(buf.len() + KEPT_BUFFER_BYTES, 0)
    });
    drop_large_buffers(&mut ages, &mut spill);
    assert_eq!(ages.capacity(), 0, "a large age list is freed");
    assert!(
        spill.is_empty() && spill.bytes() == 0,
        "a large batch is freed"
    );
}
