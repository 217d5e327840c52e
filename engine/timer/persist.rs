//! Binary snapshot format of armed timers: versioned, length-prefixed, crc32-checked.
//!
//! Layout (little endian):
//! ```text
//! magic "VTMR" | version u16 = 1 | reserved u16 = 0 | taken_at_ms i64 | count u64
//! count × record: deadline_ms i64 | sequence str | key str | rule str | event_id str
//!                 | has_txn_id u8 (0/1) [| txn_id str] | payload_key str
//! crc32 u32 over every preceding byte
//! str = length u32 | UTF-8 bytes
//! ```

use super::error::TimerError;
use super::model::{TimerIds, TimerPayload};
use std::collections::HashMap;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"VTMR";
pub(crate) const FORMAT_VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 8;
const CHECKSUM_LEN: usize = 4;
/// Smallest possible record: deadline, five empty strings' lengths, txn flag.
const MIN_RECORD_LEN: usize = 8 + 5 * 4 + 1;

/// One armed timer as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PersistedTimer {
    pub deadline_ms: i64,
    pub payload: TimerPayload,
}

/// Encodes timers (already in the order they should be re-armed) taken at wall time `taken_at_ms`.
pub(crate) fn encode<'a>(
    taken_at_ms: i64,
    timers: impl ExactSizeIterator<Item = (i64, &'a TimerPayload)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + timers.len() * 96 + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&taken_at_ms.to_le_bytes());
    out.extend_from_slice(&(timers.len() as u64).to_le_bytes());
    for (deadline_ms, payload) in timers {
        out.extend_from_slice(&deadline_ms.to_le_bytes());
        // the timer's (sequence, key) and the payload's (rule, key) are one pair since the
        // payload carries the key; the format keeps both places
        put_str(&mut out, &payload.rule);
        put_str(&mut out, payload.key());
        put_str(&mut out, &payload.rule);
        put_str(&mut out, payload.event_id());
        match payload.txn_id() {
            Some(txn_id) => {
                out.push(1);
                put_str(&mut out, txn_id);
            }
            None => out.push(0),
        }
        put_str(&mut out, payload.key());
    }
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Decodes a snapshot, checking checksum, magic and version before reading any record.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<PersistedTimer>, TimerError> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(TimerError::Truncated {
            offset: bytes.len(),
            needed: HEADER_LEN + CHECKSUM_LEN - bytes.len(),
        });
    }
    let (body, trailer) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(TimerError::Checksum { stored, computed });
    }
    let mut reader = Reader { body, offset: 0 };
    if reader.take(4)? != MAGIC {
        return Err(TimerError::BadMagic);
    }
    let version = reader.u16()?;
    if version != FORMAT_VERSION {
        return Err(TimerError::UnsupportedVersion(version));
    }
    let _reserved = reader.u16()?;
    let _taken_at_ms = reader.i64()?;
    let count = reader.u64()?;
    let room = (body.len() - HEADER_LEN) / MIN_RECORD_LEN;
    let count = usize::try_from(count)
        .ok()
        .filter(|&count| count <= room)
        .ok_or(TimerError::Corrupt("record count exceeds snapshot size"))?;
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut timers = Vec::with_capacity(count);
    for _ in 0..count {
        let deadline_ms = reader.i64()?;
        let sequence = intern(&mut names, reader.string()?);
        let key = reader.string()?;
        let rule = intern(&mut names, reader.string()?);
        let event_id = reader.string()?;
        let txn_id = match reader.u8()? {
            0 => None,
            1 => Some(reader.string()?),
            _ => return Err(TimerError::Corrupt("txn_id flag is neither 0 nor 1")),
        };
        if reader.string()? != key || sequence != rule {
            return Err(TimerError::Corrupt(
                "payload names another timer than its key",
            ));
        }
        timers.push(PersistedTimer {
            deadline_ms,
            payload: TimerPayload {
                rule,
                ids: TimerIds::new(&key, &event_id, txn_id.as_deref()),
            },
        });
    }
    if reader.offset != body.len() {
        return Err(TimerError::Corrupt("trailing bytes after the last record"));
    }
    Ok(timers)
}

/// Shares one allocation per distinct rule name.
fn intern(names: &mut HashMap<String, Arc<str>>, name: String) -> Arc<str> {
    if let Some(shared) = names.get(&name) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(name.as_str());
    names.insert(name, Arc::clone(&shared));
    shared
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    // Timer strings are rule names and field values, far below 4 GiB.
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&value.as_bytes()[..len as usize]);
}

struct Reader<'a> {
    body: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], TimerError> {
        let available = self.body.len() - self.offset;
        if len > available {
            return Err(TimerError::Truncated {
                offset: self.offset,
                needed: len - available,
            });
        }
        let slice = &self.body[self.offset..self.offset + len];
        self.offset += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TimerError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, TimerError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, TimerError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, TimerError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, TimerError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, TimerError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, TimerError> {
        let len = usize::try_from(self.u32()?)
            .map_err(|_| TimerError::Corrupt("string length overflows"))?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TimerError::Corrupt("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timer(deadline_ms: i64, key: &str, txn_id: Option<&str>) -> PersistedTimer {
        PersistedTimer {
            deadline_ms,
            payload: TimerPayload {
                rule: Arc::from("auth_without_capture"),
                ids: TimerIds::new(key, &format!("evt-{key}"), txn_id),
            },
        }
    }

    fn encode_all(timers: &[PersistedTimer]) -> Vec<u8> {
        encode(
            42,
            timers
                .iter()
                .map(|timer| (timer.deadline_ms, &timer.payload)),
        )
    }

    #[test]
    fn round_trips_timers_in_order() {
        let timers = vec![
            timer(1_000, "t1", Some("t1")),
            timer(-5, "t2", None),
            timer(i64::MAX, "", Some("")),
        ];
        let decoded = decode(&encode_all(&timers));
        assert_eq!(decoded.ok(), Some(timers));
    }

    #[test]
    fn rejects_flipped_bits_truncation_and_foreign_bytes() {
        let bytes = encode_all(&[timer(1_000, "t1", Some("t1"))]);
        for position in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= 0x40;
            assert!(decode(&corrupt).is_err(), "flip at {position} accepted");
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncation to {len} accepted"
            );
        }
        assert!(matches!(
            decode(b"definitely not a snapshot of timers"),
            Err(TimerError::Checksum { .. })
        ));
    }

    #[test]
    fn rejects_unknown_versions_and_magic_even_with_a_valid_checksum() {
        let bytes = encode_all(&[timer(1_000, "t1", None)]);
        let rechecksum = |mut body: Vec<u8>| {
            body.truncate(body.len() - CHECKSUM_LEN);
            let checksum = crc32fast::hash(&body);
            body.extend_from_slice(&checksum.to_le_bytes());
            body
        };
        let mut future = bytes.clone();
        future[4..6].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(
            decode(&rechecksum(future)),
            Err(TimerError::UnsupportedVersion(2))
        ));
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(matches!(
            decode(&rechecksum(foreign)),
            Err(TimerError::BadMagic)
        ));
        let mut inflated = bytes;
        inflated[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode(&rechecksum(inflated)),
            Err(TimerError::Corrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_rejected_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(decode(&bytes).is_err());
        }

        #[test]
        fn round_trips_arbitrary_strings(
            deadline_ms in any::<i64>(),
            key in ".{0,20}",
            event_id in ".{0,20}",
            txn_id in proptest::option::of(".{0,20}"),
        ) {
            let original = PersistedTimer {
                deadline_ms,
                payload: TimerPayload {
                    rule: Arc::from("rule"),
                    ids: TimerIds::new(&key, &event_id, txn_id.as_deref()),
                },
            };
            prop_assert_eq!(original.payload.key(), key.as_str());
            prop_assert_eq!(original.payload.event_id(), event_id.as_str());
            prop_assert_eq!(original.payload.txn_id(), txn_id.as_deref());
            let decoded = decode(&encode_all(std::slice::from_ref(&original)));
            prop_assert_eq!(decoded.ok(), Some(vec![original]));
        }
    }
}
