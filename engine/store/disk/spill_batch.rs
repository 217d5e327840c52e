//! `SpillBatch`: the entities one eviction sends to the spill, keys and payloads in one buffer.

use std::ops::Range;

/// Entity keys (kind byte, value) and their encoded payloads, laid end to end in one buffer:
/// an eviction allocates nothing per entity. [`SpillBatch::sort`] puts them in key order, the
/// order in which RocksDB's memtable takes them fastest.
#[derive(Debug, Default)]
pub struct SpillBatch {
    bytes: Vec<u8>,
    /// Per entity: where its key and its payload sit in `bytes`.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl SpillBatch {
    /// Adds the entity `(kind, value)`; `encode` appends its payload to the buffer it is given.
    pub fn push(&mut self, kind: u8, value: &[u8], encode: impl FnOnce(&mut Vec<u8>)) {
        let key = self.bytes.len();
        self.bytes.push(kind);
        self.bytes.extend_from_slice(value);
        let payload = self.bytes.len();
        encode(&mut self.bytes);
        self.entries.push((key..payload, payload..self.bytes.len()));
    }

    /// Orders the entries by key.
    pub fn sort(&mut self) {
        let bytes = &self.bytes;
        self.entries
            .sort_unstable_by(|a, b| bytes[a.0.clone()].cmp(&bytes[b.0.clone()]));
    }

    /// (entity key, payload) of each entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries
            .iter()
            .map(|(key, payload)| (&self.bytes[key.clone()], &self.bytes[payload.clone()]))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of all keys and payloads.
    pub fn bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_key_and_payload_and_sort_by_key() {
        let mut batch = SpillBatch::default();
        batch.push(5, b"b", |buf| buf.extend_from_slice(b"two"));
        batch.push(5, b"a", |buf| buf.extend_from_slice(b"one"));
        batch.push(1, b"zz", |_| {});
        assert_eq!((batch.len(), batch.bytes()), (3, 13));
        batch.sort();
        let entries: Vec<_> = batch.iter().collect();
        assert_eq!(
            entries,
            vec![
                (&b"\x01zz"[..], &b""[..]),
                (&b"\x05a"[..], &b"one"[..]),
                (&b"\x05b"[..], &b"two"[..])
            ]
        );
    }
}
