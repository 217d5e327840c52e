//! Errors of the timer service: unreadable snapshots and a timer thread that cannot start.

/// Why restoring a snapshot or starting the service failed.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("timer snapshot is truncated: {needed} more bytes needed at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("timer snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("not a timer snapshot: bad magic bytes")]
    BadMagic,
    #[error("unsupported timer snapshot version {0}")]
    UnsupportedVersion(u16),
    #[error("corrupt timer snapshot: {0}")]
    Corrupt(&'static str),
    #[error("cannot start the timer thread")]
    Spawn(#[source] std::io::Error),
}
