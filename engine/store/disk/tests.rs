//! Tests of the RocksDB side: manifests, checkpoint files, pending checkpoints, spill epochs.

use super::*;

fn manifest(sequence: u64, entities: u64) -> Manifest {
    Manifest {
        sequence,
        entities,
        offsets: vec![],
        timers: vec![],
    }
}

fn open(dir: &Path) -> Disk {
    Disk::open(dir, 1 << 20, false).unwrap()
}

fn incoming_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(INCOMING_DIR)).unwrap().count()
}

/// A crash after the pending checkpoint file was ingested but before its record was
/// dropped: the next start sees the file applied and only drops the record.
#[test]
fn a_pending_checkpoint_applied_before_a_crash_is_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let disk = open(dir.path());
        let mut writer = disk.checkpoint_writer(1).unwrap();
        writer.put_entity(b"\x05card", b"v1").unwrap();
        let pending = disk.write_pending(&[], writer, &manifest(1, 1)).unwrap();
        disk.ingest(&pending.file).unwrap();
    }
    let disk = open(dir.path());
    assert_eq!(disk.pending().unwrap().map(|p| p.sequence), Some(1));
    assert_eq!(incoming_files(dir.path()), 0, "ingestion moved the file");
    disk.resolve_pending(true).unwrap();
    assert!(disk.pending().unwrap().is_none());
    assert_eq!(disk.manifest().unwrap(), Some(manifest(1, 1)));
    assert_eq!(disk.checkpointed(b"\x05card").unwrap().unwrap(), b"v1");
    assert_eq!(incoming_files(dir.path()), 0);
}

/// Files of checkpoints that never finished are removed at open; an unfinished writer
/// removes its own file.
#[test]
fn unfinished_checkpoint_files_do_not_accumulate() {
    let dir = tempfile::tempdir().unwrap();
    {
        let disk = open(dir.path());
        let mut writer = disk.checkpoint_writer(1).unwrap();
        writer.put_entity(b"\x05b", b"v").unwrap();
        assert!(
            writer.put_entity(b"\x05a", b"v").is_err(),
            "keys must ascend"
        );
        drop(writer);
        assert_eq!(incoming_files(dir.path()), 0);
        let crashed = dir.path().join(INCOMING_DIR).join("checkpoint-7-1.sst");
        std::fs::write(crashed, b"half a file").unwrap();
    }
    open(dir.path());
    assert_eq!(incoming_files(dir.path()), 0);
}

/// Spill entries of an epoch a checkpoint took in are dead, even if not deleted yet.
#[test]
fn a_new_spill_epoch_hides_the_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    disk.spill(&batch(b"a", b"old")).unwrap();
    disk.spill_epoch.fetch_add(1, Ordering::Relaxed);
    disk.spill(&batch(b"b", b"new")).unwrap();
    assert_eq!(
        spilled(&disk, &disk.spill_view()),
        vec![(b"\x05b".to_vec(), b"new".to_vec())]
    );
    assert_eq!(disk.take_spilled(b"\x05a").unwrap(), None);
    assert_eq!(disk.take_spilled(b"\x05b").unwrap().unwrap(), b"new");
}

/// A spill batch of one entity of kind 5.
fn batch(value: &[u8], payload: &[u8]) -> SpillBatch {
    let mut batch = SpillBatch::default();
    batch.push(5, value, |buf| buf.extend_from_slice(payload));
    batch
}

fn spilled(disk: &Disk, view: &SpillView<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = Vec::new();
    disk.for_each_spilled(view, |k, v| {
        seen.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    seen
}

/// A checkpoint written in the background reads the spill as it was captured: an entity read
/// back (its entry deleted) or spilled after that changes nothing it sees.
#[test]
fn a_spill_view_keeps_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    disk.spill(&batch(b"a", b"one")).unwrap();
    let view = disk.spill_view();
    assert_eq!(disk.take_spilled(b"\x05a").unwrap().unwrap(), b"one");
    disk.spill(&batch(b"b", b"two")).unwrap();
    assert_eq!(
        spilled(&disk, &view),
        vec![(b"\x05a".to_vec(), b"one".to_vec())]
    );
    assert_eq!(
        spilled(&disk, &disk.spill_view()),
        vec![(b"\x05b".to_vec(), b"two".to_vec())]
    );
}

#[test]
fn a_format_1_manifest_is_refused_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    let mut old = manifest(3, 0).encode();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    let body = old.len() - 4;
    let crc = crc32fast::hash(&old[..body]);
    old[body..].copy_from_slice(&crc.to_le_bytes());
    let meta = disk.cf(CF_CHECKPOINT_META).unwrap();
    disk.db.put_cf(meta, LEGACY_MANIFEST_KEY, old).unwrap();
    let error = disk.manifest().unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::UnsupportedCheckpointVersion {
                found: 1,
                expected: 2
            }
        ),
        "{error}"
    );
}

#[test]
fn manifest_round_trips_and_detects_damage() {
    let m = Manifest {
        sequence: 3,
        entities: 42,
        offsets: vec![PartitionOffset {
            topic: "payments".into(),
            partition: 2,
            offset: 1_000,
        }],
        timers: vec![1, 2, 3],
    };
    let bytes = m.encode();
    assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(Manifest::decode(&bad).is_err(), "flip at {i} accepted");
    }
}

#[test]
fn sealed_values_detect_damage() {
    let v = seal(b"\x05card", b"payload");
    assert_eq!(unseal(b"\x05card", &v).unwrap(), b"payload");
    assert!(unseal(b"\x05carx", &v).is_err());
    let mut bad = v.clone();
    bad[1] ^= 1;
    let err = unseal(b"\x05card", &bad).unwrap_err();
    assert!(err.to_string().contains("card_id:card"), "{err}");
}

/// A data directory whose spill column family was compacted level by level (before the spill
/// was compacted universally) opens, and its spill is cleared as at every start.
#[test]
fn a_spill_compacted_by_levels_opens_under_universal_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = [CF_SPILL, CF_CHECKPOINT_ENTITIES, CF_CHECKPOINT_META]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir.path(), families).unwrap();
        let cf = db.cf_handle(CF_SPILL).unwrap();
        for round in 0..3u8 {
            for i in 0..100u8 {
                db.put_cf(cf, spill_key(0, &[5, round, i]), b"old").unwrap();
            }
            db.flush_cf(cf).unwrap();
            if round == 0 {
                // files below level 0, as levelled compaction leaves them
                db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            }
        }
        let levels = (0..7)
            .filter(|l| {
                db.property_int_value_cf(cf, &format!("rocksdb.num-files-at-level{l}"))
                    .unwrap()
                    .is_some_and(|files| files > 0)
            })
            .count();
        assert!(levels >= 2, "files on {levels} level(s)");
    }
    let disk = open(dir.path());
    assert_eq!(disk.take_spilled(&[5, 0, 7]).unwrap(), None);
    disk.spill(&batch(b"a", b"new")).unwrap();
    assert_eq!(
        spilled(&disk, &disk.spill_view()),
        vec![(b"\x05a".to_vec(), b"new".to_vec())]
    );
}
