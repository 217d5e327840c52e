//! Buffers handed back to the thread that fills them, so a replay does not allocate (and, with
//! the allocator returning freed pages at once, fault in) its large batch buffers per batch.

use crossbeam_channel::{bounded, Receiver, Sender};

/// Emptied buffers on their way back to their producer; a full or closed pool drops them.
pub(super) struct Recycle<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
}

impl<T> Clone for Recycle<T> {
    fn clone(&self) -> Self {
        Recycle {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        }
    }
}

impl<T> Recycle<T> {
    /// A pool holding at most `capacity` buffers.
    pub(super) fn new(capacity: usize) -> Recycle<T> {
        let (tx, rx) = bounded(capacity);
        Recycle { tx, rx }
    }

    /// A returned buffer, if any.
    pub(super) fn take(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Returns a buffer for reuse (dropped when the pool is full).
    pub(super) fn give(&self, buffer: T) {
        let _ = self.tx.try_send(buffer);
    }
}
