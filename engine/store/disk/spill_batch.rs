//! `SpillBatch`: the entities one eviction sends to the spill, keys and payloads in one buffer.

use std::ops::Range;

/// Entity keys (kind byte, value) and their encoded payloads, laid end to end in one buffer:
/// an eviction allocates nothing per entity, and one kept batch serves eviction after eviction
/// ([`SpillBatch::clear`]).
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

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
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
    fn entries_keep_their_key_and_payload_until_cleared() {
        let mut batch = SpillBatch::default();
        batch.push(5, b"b", |buf| buf.extend_from_slice(b"two"));
        batch.push(1, b"zz", |_| {});
        assert_eq!((batch.len(), batch.bytes()), (2, 8));
        let entries: Vec<_> = batch.iter().collect();
        assert_eq!(
            entries,
            vec![(&b"\x05b"[..], &b"two"[..]), (&b"\x01zz"[..], &b""[..])]
        );
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.bytes(), 0);
        batch.push(2, b"c", |buf| buf.push(9));
        assert_eq!(
            batch.iter().collect::<Vec<_>>(),
            vec![(&b"\x02c"[..], &[9u8][..])]
        );
    }
}
