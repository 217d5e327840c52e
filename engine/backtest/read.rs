//! Reading the recorded events file (JSON lines or length-delimited protobuf) into raw batches,
//! and decoding a raw batch's records in parallel.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::PathBuf;

use crossbeam_channel::Sender;
use rayon::prelude::*;

use super::recycle::Recycle;
use super::{BacktestError, BadRecord, EventFileFormat};
use crate::event::{decode_event, InputFormat, PaymentEvent, DEFAULT_MAX_EVENT_BYTES};

/// Events handed to the rule sets at a time.
const BATCH: usize = 1024;
/// Bad records kept (with line numbers) in the report; all are counted.
const BAD_SAMPLES: usize = 20;
/// Largest protobuf record accepted (a larger length prefix means the file is corrupt).
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// Counts of the records read.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub(crate) events: u64,
    pub(crate) bad_records: u64,
    pub(super) bad_samples: Vec<BadRecord>,
}

impl ReadStats {
    /// A record could not be used: counted, the first few kept with their line number.
    pub(super) fn bad_record(&mut self, line: u64, error: String) {
        self.bad_records += 1;
        if self.bad_samples.len() < BAD_SAMPLES {
            tracing::debug!(line, %error, "bad record in the events file, skipped");
            self.bad_samples.push(BadRecord { line, error });
        }
    }
}

/// Records of the events file as read, not yet decoded: their bytes one after the other.
#[derive(Default)]
pub(super) struct RawBatch {
    bytes: Vec<u8>,
    records: Vec<RawRecord>,
    /// Bytes of the file read up to the end of this batch.
    pub(super) read_bytes: u64,
}

/// One record of a [`RawBatch`].
struct RawRecord {
    /// 1-based line (JSON lines) or record number (protobuf, kcat dump).
    line: u64,
    /// How the record's bytes are encoded.
    wire: InputFormat,
    /// `bytes[start..end]`, or a framing error: nothing after it can be read.
    body: Result<(usize, usize), String>,
}

impl RawBatch {
    /// Decodes the records in parallel (rayon) into `events` (emptied first), counting the bad
    /// ones into `stats` in file order; `decoded` is scratch space. Leaves the batch empty, its
    /// buffers kept for reuse.
    pub(super) fn decode_into(
        &mut self,
        events: &mut Vec<PaymentEvent>,
        decoded: &mut Vec<Result<PaymentEvent, String>>,
        stats: &mut ReadStats,
    ) {
        let bytes = &self.bytes;
        self.records
            .par_iter()
            .with_min_len(64)
            .map(|record| {
                let (start, end) = record.body.clone()?;
                decode_event(&bytes[start..end], record.wire, DEFAULT_MAX_EVENT_BYTES)
                    .map_err(|e| e.to_string())
            })
            .collect_into_vec(decoded);
        events.clear();
        for (record, result) in self.records.iter().zip(decoded.drain(..)) {
            match result {
                Ok(event) => events.push(event),
                Err(error) => stats.bad_record(record.line, error),
            }
        }
        stats.events += events.len() as u64;
        self.bytes.clear();
        self.records.clear();
    }
}

/// Reads the events file into raw batches for the decoding thread.
pub(super) struct EventReader {
    pub(super) format: EventFileFormat,
    pub(super) path: PathBuf,
    /// Raw batches decoded, back for reuse.
    pub(super) recycle: Recycle<RawBatch>,
}

/// A reader that counts the bytes it returned.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl EventReader {
    /// Reads the file to its end (or until the receiver hangs up): framing only, the
    /// decoding thread decodes.
    pub(super) fn run(self, file: File, out: Sender<RawBatch>) -> Result<(), BacktestError> {
        let mut input = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: file,
                bytes: 0,
            },
        );
        let mut batch = self.recycle.take().unwrap_or_default();
        let mut record = Vec::new();
        let mut line = 0u64;
        loop {
            line += 1;
            let next = match self.format {
                EventFileFormat::Jsonl => next_line(&mut input, &mut record),
                EventFileFormat::Pb => next_pb_record(&mut input, &mut record),
                EventFileFormat::Kcat => next_kcat_record(&mut input, &mut record),
            };
            match next {
                Ok(Next::Record(wire)) => {
                    let start = batch.bytes.len();
                    batch.bytes.extend_from_slice(&record);
                    batch.records.push(RawRecord {
                        line,
                        wire,
                        body: Ok((start, batch.bytes.len())),
                    });
                }
                Ok(Next::Bad(error)) => batch.records.push(RawRecord {
                    line,
                    wire: InputFormat::Json,
                    body: Err(error),
                }),
                Ok(Next::Blank) => continue,
                Ok(Next::End) => break,
                Err(RecordError::Fatal(error)) => {
                    // The rest of a protobuf file cannot be framed: report where and stop.
                    batch.records.push(RawRecord {
                        line,
                        wire: InputFormat::Json,
                        body: Err(format!("{error}; the rest of the file is skipped")),
                    });
                    break;
                }
                Err(RecordError::Io(source)) => {
                    return Err(BacktestError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
            if batch.records.len() == BATCH {
                batch.read_bytes = input.get_ref().bytes - input.buffer().len() as u64;
                let next = self.recycle.take().unwrap_or_default();
                if out.send(std::mem::replace(&mut batch, next)).is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.records.is_empty() {
            batch.read_bytes = input.get_ref().bytes - input.buffer().len() as u64;
            let _ = out.send(batch);
        }
        Ok(())
    }
}

/// Reads one line; a JSON line may start with its record key and a tab (dropped here).
fn next_line(input: &mut impl BufRead, record: &mut Vec<u8>) -> Result<Next, RecordError> {
    record.clear();
    if input.read_until(b'\n', record).map_err(RecordError::Io)? == 0 {
        return Ok(Next::End);
    }
    while record.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        record.pop();
    }
    let Some(first) = record.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(Next::Blank);
    };
    if record[first] != b'{' {
        // `key<TAB>value`: the key cannot hold a tab (kcat and the console consumer print it
        // as is), the JSON value starts after the first one.
        if let Some(tab) = record.iter().position(|b| *b == b'\t') {
            record.drain(..=tab);
        }
    }
    Ok(Next::Record(InputFormat::Json))
}

enum Next {
    /// A record, and how its value is encoded.
    Record(InputFormat),
    /// A record that is framed but cannot be an event (e.g. a null value).
    Bad(String),
    Blank,
    End,
}

enum RecordError {
    /// The file cannot be read further.
    Fatal(String),
    Io(std::io::Error),
}

/// Reads one length-delimited protobuf record (varint length, then the bytes).
fn next_pb_record(input: &mut impl Read, record: &mut Vec<u8>) -> Result<Next, RecordError> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        match input.read_exact(&mut byte) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return if i == 0 {
                    Ok(Next::End)
                } else {
                    Err(RecordError::Fatal("truncated length prefix".into()))
                };
            }
            Err(e) => return Err(RecordError::Io(e)),
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > MAX_RECORD_BYTES {
                return Err(RecordError::Fatal(format!(
                    "record length {len} exceeds {MAX_RECORD_BYTES} bytes"
                )));
            }
            record.clear();
            record.resize(len as usize, 0);
            return match input.read_exact(record) {
                Ok(()) => Ok(Next::Record(InputFormat::Protobuf)),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(RecordError::Fatal(format!(
                    "truncated record: {len} bytes announced"
                ))),
                Err(e) => Err(RecordError::Io(e)),
            };
        }
    }
    Err(RecordError::Fatal(
        "length prefix longer than 10 bytes".into(),
    ))
}

/// Reads one record of a kcat dump (`-f '%S %s\n'`): the value's length in decimal (`-1` for
/// a null value), a space, the value, a newline. The value is protobuf or JSON, told apart as
/// the service's `auto` input format does.
fn next_kcat_record(input: &mut impl BufRead, record: &mut Vec<u8>) -> Result<Next, RecordError> {
    record.clear();
    if input.read_until(b' ', record).map_err(RecordError::Io)? == 0 {
        return Ok(Next::End);
    }
    if record.last() != Some(&b' ') {
        return if record.iter().all(u8::is_ascii_whitespace) {
            Ok(Next::End)
        } else {
            Err(RecordError::Fatal("truncated length".into()))
        };
    }
    record.pop();
    let length = std::str::from_utf8(record)
        .ok()
        .and_then(|text| text.trim_start_matches(['\n', '\r']).parse::<i64>().ok());
    let (len, null) = match length {
        Some(-1) => (0, true),
        Some(n) if (0..=MAX_RECORD_BYTES as i64).contains(&n) => (n as usize, false),
        Some(n) => {
            return Err(RecordError::Fatal(format!(
                "record length {n} is not between -1 and {MAX_RECORD_BYTES}"
            )))
        }
        None => {
            return Err(RecordError::Fatal(format!(
                "expected a decimal length and a space, got {:?}",
                String::from_utf8_lossy(&record[..record.len().min(40)])
            )))
        }
    };
    record.clear();
    if null {
        // kcat prints nothing for a null value ("NULL" with -Z): skip to the newline
        input.read_until(b'\n', record).map_err(RecordError::Io)?;
        return Ok(Next::Bad("null value (a tombstone), not an event".into()));
    }
    record.resize(len, 0);
    match input.read_exact(record) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            return Err(RecordError::Fatal(format!(
                "truncated record: {len} bytes announced"
            )))
        }
        Err(e) => return Err(RecordError::Io(e)),
    }
    let mut newline = [0u8];
    match input.read_exact(&mut newline) {
        Ok(()) if newline[0] == b'\n' => {}
        Ok(()) => {
            return Err(RecordError::Fatal(format!(
            "no newline after a record of {len} bytes (was the dump written with -f '%S %s\\n'?)"
        )))
        }
        // the last newline may be missing
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(RecordError::Io(e)),
    }
    // the service's `auto` input format: the same values decode the same way
    Ok(Next::Record(InputFormat::Auto))
}

/// Calls `each` with the events of `path` in file order until it returns `Break` (the reader
/// stops there); bad records are counted, not passed. For replays that need every event on one
/// thread (`veto explain`).
pub(crate) fn for_each_event(
    path: &std::path::Path,
    format: EventFileFormat,
    mut each: impl FnMut(&PaymentEvent) -> std::ops::ControlFlow<()>,
) -> Result<ReadStats, BacktestError> {
    let file = File::open(path).map_err(|source| BacktestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let recycle = Recycle::new(4);
    let reader = EventReader {
        format,
        path: path.to_path_buf(),
        recycle: recycle.clone(),
    };
    let (tx, rx) = crossbeam_channel::bounded::<RawBatch>(4);
    std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("events-read".into())
            .spawn_scoped(scope, move || reader.run(file, tx))
            .map_err(|source| BacktestError::Spawn {
                name: "events-read".into(),
                source,
            })?;
        let mut stats = ReadStats::default();
        let (mut events, mut decoded) = (Vec::new(), Vec::new());
        'batches: while let Ok(mut raw) = rx.recv() {
            raw.decode_into(&mut events, &mut decoded, &mut stats);
            recycle.give(raw);
            for event in &events {
                if each(event).is_break() {
                    break 'batches;
                }
            }
        }
        // The reader stops at its next send.
        drop(rx);
        reading
            .join()
            .map_err(|_| BacktestError::Thread("event reader"))??;
        Ok(stats)
    })
}
