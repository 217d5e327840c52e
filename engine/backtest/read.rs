//! Reading the recorded events file (JSON lines or length-delimited protobuf) into batches.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;
use indicatif::ProgressBar;

use super::{BacktestError, BadRecord, Batch, EventFileFormat};
use crate::event::{decode_event, InputFormat, PaymentEvent, DEFAULT_MAX_EVENT_BYTES};

/// Events handed to the rule sets at a time.
const BATCH: usize = 1024;
/// Bad records kept (with line numbers) in the report; all are counted.
const BAD_SAMPLES: usize = 20;
/// Largest protobuf record accepted (a larger length prefix means the file is corrupt).
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// Counts of the records read.
#[derive(Debug, Default)]
pub(super) struct ReadStats {
    pub(super) events: u64,
    pub(super) bad_records: u64,
    pub(super) bad_samples: Vec<BadRecord>,
}

impl ReadStats {
    /// A record could not be used: counted, the first few kept with their line number.
    fn bad_record(&mut self, line: u64, error: String) {
        self.bad_records += 1;
        if self.bad_samples.len() < BAD_SAMPLES {
            tracing::debug!(line, %error, "bad record in the events file, skipped");
            self.bad_samples.push(BadRecord { line, error });
        }
    }
}

/// Reads the events file and hands batches to every rule set.
pub(super) struct EventReader {
    pub(super) format: EventFileFormat,
    pub(super) path: PathBuf,
    pub(super) bar: ProgressBar,
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
    pub(super) fn run(
        self,
        file: File,
        sets: Vec<Sender<Batch>>,
    ) -> Result<ReadStats, BacktestError> {
        let mut input = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: file,
                bytes: 0,
            },
        );
        let mut stats = ReadStats::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut record = Vec::new();
        let mut line = 0u64;
        loop {
            line += 1;
            let next = match self.format {
                EventFileFormat::Jsonl => self.next_line(&mut input, &mut record),
                EventFileFormat::Pb => next_pb_record(&mut input, &mut record),
            };
            match next {
                Ok(Next::Record) => {}
                Ok(Next::Blank) => continue,
                Ok(Next::End) => break,
                Err(RecordError::Fatal(error)) => {
                    // The rest of a protobuf file cannot be framed: report where and stop.
                    stats.bad_record(line, format!("{error}; the rest of the file is skipped"));
                    break;
                }
                Err(RecordError::Io(source)) => {
                    return Err(BacktestError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
            let wire = match self.format {
                EventFileFormat::Jsonl => InputFormat::Json,
                EventFileFormat::Pb => InputFormat::Protobuf,
            };
            match decode_event(&record, wire, DEFAULT_MAX_EVENT_BYTES) {
                Ok(event) => {
                    batch.push(event);
                    stats.events += 1;
                }
                Err(e) => stats.bad_record(line, e.to_string()),
            }
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if !send_all(&sets, full) {
                    return Ok(stats);
                }
                self.bar.set_position(input.get_ref().bytes);
                self.bar.set_message(format!("{} events", stats.events));
            }
        }
        if !batch.is_empty() {
            send_all(&sets, batch);
        }
        Ok(stats)
    }

    fn next_line(
        &self,
        input: &mut impl BufRead,
        record: &mut Vec<u8>,
    ) -> Result<Next, RecordError> {
        record.clear();
        if input.read_until(b'\n', record).map_err(RecordError::Io)? == 0 {
            return Ok(Next::End);
        }
        while record.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            record.pop();
        }
        if record.iter().all(u8::is_ascii_whitespace) {
            return Ok(Next::Blank);
        }
        Ok(Next::Record)
    }
}

/// Sends a batch to every set; false when a set stopped (its error is reported by its thread).
fn send_all(sets: &[Sender<Batch>], batch: Vec<PaymentEvent>) -> bool {
    let batch = Arc::new(batch);
    sets.iter().all(|tx| tx.send(batch.clone()).is_ok())
}

enum Next {
    Record,
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
                Ok(()) => Ok(Next::Record),
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
