//! Allocation-lean protobuf paths of the hot loop: `PaymentEvent` decoded straight from the wire bytes, `Decision` encoded from borrowed fields.
//!
//! prost's generated decoder copies every `bytes` field twice (into a `Bytes`, then a `Vec`)
//! and the generated encoder needs owned copies of every string. These functions read and
//! write the same wire format directly:
//!
//! - [`decode_event_into`] accepts exactly the well-formed messages the prost decoder accepts and
//!   returns the same field values; on anything unusual (groups, malformed varints, invalid
//!   UTF-8, wrong wire types, truncation) it returns `None` and the caller falls back to the
//!   prost path, which produces the exact error. Checked against prost by property tests.
//! - [`encode_decision`] writes the bytes prost would write for the same `veto.v1.Decision`
//!   (fields in tag order, proto3 defaults omitted). Checked against prost by property tests.

use super::model::{assign, assign_optional, Decision, Field, Outcome, PaymentEvent, Trigger};

/// Wire types of the protobuf encoding.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// A cursor over protobuf wire bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A base-128 varint of at most 10 bytes (the 10th at most 1), like prost's.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.buf.iter().take(10).enumerate() {
            if i == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte < 0x80 {
                self.buf = self.buf.get(i + 1..)?;
                return Some(value);
            }
        }
        None
    }

    /// A field key: `(tag, wire type)`; `None` for keys prost rejects.
    fn key(&mut self) -> Option<(u32, u64)> {
        let key = self.varint()?;
        let key = u32::try_from(key).ok()?;
        let tag = key >> 3;
        (tag >= 1).then_some((tag, u64::from(key & 7)))
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(head)
    }

    /// A length-delimited payload.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    /// Skips an unknown field; groups (deprecated) are left to the prost path.
    fn skip(&mut self, wire_type: u64) -> Option<()> {
        match wire_type {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.take(8).map(|_| ()),
            LEN => self.bytes().map(|_| ()),
            FIXED32 => self.take(4).map(|_| ()),
            _ => None,
        }
    }
}

/// One `attrs` map entry: `(key, value)`, each empty when absent, last occurrence wins.
fn attr_entry(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut reader = Reader::new(bytes);
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    while !reader.is_empty() {
        match reader.key()? {
            (1, LEN) => key = reader.bytes()?,
            (2, LEN) => value = reader.bytes()?,
            (1 | 2, _) => return None,
            (_, wire_type) => reader.skip(wire_type)?,
        }
    }
    Some((key, value))
}

/// Decodes a `veto.v1.PaymentEvent` (not validated) into `ev`, reusing its strings' buffers;
/// `None` means "use the prost path" (`ev` is then partly overwritten).
pub(crate) fn decode_event_into(bytes: &[u8], ev: &mut PaymentEvent) -> Option<()> {
    let mut reader = Reader::new(bytes);
    let mut strings: [Option<&[u8]>; 17] = [None; 17];
    let mut event_time_ms = 0i64;
    let mut amount_minor = None;
    let mut attrs = false;
    while !reader.is_empty() {
        let (tag, wire_type) = reader.key()?;
        match (tag, wire_type) {
            (3, VARINT) => event_time_ms = reader.varint()? as i64,
            (10, VARINT) => amount_minor = Some(reader.varint()? as i64),
            (17, LEN) => {
                attr_entry(reader.bytes()?)?;
                attrs = true;
            }
            (1 | 2 | 4..=9 | 11..=16, LEN) => {
                strings[tag as usize] = Some(reader.bytes()?);
            }
            (1..=17, _) => return None,
            (_, wire_type) => reader.skip(wire_type)?,
        }
    }
    let text = |tag: usize| match strings[tag] {
        Some(b) => std::str::from_utf8(b).ok().map(Some),
        None => Some(None),
    };
    assign(&mut ev.event_id, text(1)?.unwrap_or_default());
    assign(&mut ev.kind, text(2)?.unwrap_or_default());
    ev.event_time_ms = event_time_ms;
    ev.amount_minor = amount_minor;
    // tags 4..=9 and 11..=16 are the optional string fields, in `Field` order
    for field in Field::ALL {
        if let Some(slot) = ev.optional_str_mut(field) {
            assign_optional(slot, text(field as usize + 1)?);
        }
    }
    ev.attrs.clear();
    if attrs {
        // rare: a second pass over the entries, last occurrence of a key wins
        let mut reader = Reader::new(bytes);
        while !reader.is_empty() {
            match reader.key()? {
                (17, LEN) => {
                    let (key, value) = attr_entry(reader.bytes()?)?;
                    let key = std::str::from_utf8(key).ok()?;
                    let value = std::str::from_utf8(value).ok()?;
                    ev.attrs.insert(key.to_owned(), value.to_owned());
                }
                (_, wire_type) => reader.skip(wire_type)?,
            }
        }
    }
    Some(())
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    // One byte per started group of 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(buf: &mut Vec<u8>, tag: u32, wire_type: u64) {
    put_varint(buf, (u64::from(tag) << 3) | wire_type);
}

fn put_str(buf: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        put_key(buf, tag, LEN);
        put_varint(buf, value.len() as u64);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// An `int32`/`int64`/enum field: negative values sign-extend to 10 bytes, like prost.
fn put_int(buf: &mut Vec<u8>, tag: u32, value: i64) {
    if value != 0 {
        put_key(buf, tag, VARINT);
        put_varint(buf, value as u64);
    }
}

fn int_len(tag: u32, value: i64) -> usize {
    if value == 0 {
        0
    } else {
        varint_len(u64::from(tag) << 3) + varint_len(value as u64)
    }
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        varint_len(u64::from(tag) << 3) + varint_len(value.len() as u64) + value.len()
    }
}

fn outcome_number(outcome: Outcome) -> i64 {
    match outcome {
        Outcome::Allow => 1,
        Outcome::Review => 2,
        Outcome::Challenge => 3,
        Outcome::Block => 4,
    }
}

/// Appends the protobuf `veto.v1.Decision` of `d` to `buf` (byte-identical to prost's).
pub(crate) fn encode_decision(d: &Decision, buf: &mut Vec<u8>) {
    put_str(buf, 1, &d.event_id);
    put_str(buf, 2, d.txn_id.as_deref().unwrap_or_default());
    put_int(buf, 3, outcome_number(d.outcome));
    put_int(buf, 4, i64::from(d.score));
    for hit in &d.hits {
        let outcome = outcome_number(hit.outcome);
        let len = str_len(1, &hit.rule) + int_len(2, outcome) + int_len(3, i64::from(hit.score));
        put_key(buf, 5, LEN);
        put_varint(buf, len as u64);
        put_str(buf, 1, &hit.rule);
        put_int(buf, 2, outcome);
        put_int(buf, 3, i64::from(hit.score));
    }
    put_str(buf, 6, &d.ruleset_version);
    let trigger = match d.trigger {
        Trigger::Event => 1,
        Trigger::Timeout => 2,
    };
    put_int(buf, 7, trigger);
    put_int(buf, 8, i64::from(d.shadow));
    put_int(buf, 9, d.decided_at_ms);
    put_int(buf, 10, i64::from(d.eval_latency_us));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (value, len) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), len, "{value}");
            assert_eq!(varint_len(value), len, "{value}");
            assert_eq!(Reader::new(&buf).varint(), Some(value));
        }
    }

    fn decode_event(bytes: &[u8]) -> Option<PaymentEvent> {
        let mut ev = PaymentEvent::default();
        decode_event_into(bytes, &mut ev).map(|()| ev)
    }

    #[test]
    fn rejects_what_prost_rejects() {
        // Overlong varint (10th byte > 1), truncated length, group wire type, tag 0.
        let overlong = [
            0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
        ];
        assert!(decode_event(&overlong).is_none());
        assert!(decode_event(&[0x0A, 0x05, b'a']).is_none());
        assert!(decode_event(&[0x0B]).is_none());
        assert!(decode_event(&[0x00, 0x00]).is_none());
        // Wrong wire type for a known field.
        assert!(decode_event(&[0x08, 0x01]).is_none());
    }
}
