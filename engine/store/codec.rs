//! Byte-level encoding helpers (varints, zigzag, fixed ints) for spilled and checkpointed state.

use std::fmt;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Appends encoded values to a byte vector.
pub struct Writer<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u64_fixed(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

/// Reads encoded values from a byte slice, failing cleanly on truncated or malformed input.
pub struct Reader<'a> {
    pub rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.rest.split_first().ok_or(DecodeError("truncated"))?;
        self.rest = rest;
        Ok(first)
    }

    pub fn u64_fixed(&mut self) -> Result<u64, DecodeError> {
        let head = self.take(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        Ok(u64::from_le_bytes(b))
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    pub fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A length that must not exceed the bytes left (each element takes at least one byte).
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.rest.len() as u64 {
            return Err(DecodeError("length exceeds input"));
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ints_round_trip(a in any::<u64>(), b in any::<i64>(), c in any::<u64>()) {
            let mut buf = Vec::new();
            let mut w = Writer { buf: &mut buf };
            w.varint(a);
            w.zigzag(b);
            w.u64_fixed(c);
            let mut r = Reader { rest: &buf };
            prop_assert_eq!(r.varint().unwrap(), a);
            prop_assert_eq!(r.zigzag().unwrap(), b);
            prop_assert_eq!(r.u64_fixed().unwrap(), c);
            prop_assert!(r.rest.is_empty());
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut r = Reader { rest: &[0x80] };
        assert_eq!(r.varint(), Err(DecodeError("truncated")));
        let mut r = Reader { rest: &[5, 1] };
        assert_eq!(r.bytes(), Err(DecodeError("length exceeds input")));
    }
}
