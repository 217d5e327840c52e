//! Operator signals: SIGUSR1 (reload the rule files), SIGUSR2 (roll back to the previous live
//! set), SIGTERM/SIGINT (stop), and the queue that hands reload and rollback requests to the
//! reloader in the order they were signalled.

use std::time::Instant;

use tokio::sync::{mpsc, watch};

/// Rollback requests that may wait while a reload or rollback runs; more are dropped (logged).
const ROLLBACK_QUEUE: usize = 8;

/// What an operator asked for, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGUSR1: read, check, compile and test the rule files, then swap.
    Reload(Instant),
    /// SIGUSR2: return to the live set that the last swap replaced.
    Rollback(Instant),
}

/// The sending side of the request queue (the signal thread; tests drive a reloader with it).
#[derive(Debug, Clone)]
pub struct RequestSender {
    reload: mpsc::Sender<Instant>,
    rollback: mpsc::Sender<Instant>,
}

impl RequestSender {
    /// Queues a reload. While one reload waits, further ones fold into it (it reads the files
    /// when it starts, so it sees the newest ones); returns `false` when this one was folded.
    pub fn reload(&self) -> bool {
        self.reload.try_send(Instant::now()).is_ok()
    }

    /// Queues a rollback; `false` when the queue is full (this one is dropped) or closed.
    pub fn rollback(&self) -> bool {
        self.rollback.try_send(Instant::now()).is_ok()
    }
}

/// The receiving side: reloads and rollbacks, oldest first.
#[derive(Debug)]
pub struct Requests {
    reload: mpsc::Receiver<Instant>,
    rollback: mpsc::Receiver<Instant>,
    /// The oldest waiting request of each kind, taken off its channel to compare the two.
    next_reload: Option<Instant>,
    next_rollback: Option<Instant>,
}

/// A request queue: what [`listen_signals`] feeds, or what a test sends on.
pub fn requests() -> (RequestSender, Requests) {
    let (reload_tx, reload) = mpsc::channel(1);
    let (rollback_tx, rollback) = mpsc::channel(ROLLBACK_QUEUE);
    (
        RequestSender {
            reload: reload_tx,
            rollback: rollback_tx,
        },
        Requests {
            reload,
            rollback,
            next_reload: None,
            next_rollback: None,
        },
    )
}

impl Requests {
    /// The oldest waiting request; waits for one. `None` once every sender is gone and nothing
    /// waits.
    pub async fn next(&mut self) -> Option<Request> {
        self.peek_waiting();
        if self.next_reload.is_none() && self.next_rollback.is_none() {
            tokio::select! {
                Some(at) = self.reload.recv() => self.next_reload = Some(at),
                Some(at) = self.rollback.recv() => self.next_rollback = Some(at),
                else => return None,
            }
            // The other kind may have been signalled first and be waiting already.
            self.peek_waiting();
        }
        match (self.next_reload, self.next_rollback) {
            (Some(reload), Some(rollback)) if rollback < reload => {
                self.next_rollback = None;
                Some(Request::Rollback(rollback))
            }
            (Some(reload), _) => {
                self.next_reload = None;
                Some(Request::Reload(reload))
            }
            (None, rollback) => {
                self.next_rollback = None;
                rollback.map(Request::Rollback)
            }
        }
    }

    fn peek_waiting(&mut self) {
        if self.next_reload.is_none() {
            self.next_reload = self.reload.try_recv().ok();
        }
        if self.next_rollback.is_none() {
            self.next_rollback = self.rollback.try_recv().ok();
        }
    }
}

/// What [`listen_signals`] feeds: reload and rollback requests, and the stop flag.
pub struct Signals {
    pub requests: Requests,
    pub stop: watch::Receiver<bool>,
}

/// Installs the signal handlers (signal-hook) on a dedicated thread and returns the channels
/// they feed: SIGUSR1 reloads, SIGUSR2 rolls back, SIGTERM/SIGINT stop.
pub fn listen_signals() -> std::io::Result<Signals> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGUSR2, SIGTERM, SIGINT])?;
    let (sender, requests) = requests();
    let (stop_tx, stop_rx) = watch::channel(false);
    std::thread::Builder::new()
        .name("veto-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGUSR1 => {
                        // Folded into a reload already queued: that one reads the same files.
                        let _ = sender.reload();
                    }
                    SIGUSR2 => {
                        if !sender.rollback() {
                            tracing::warn!(
                                queued = ROLLBACK_QUEUE,
                                "SIGUSR2 dropped: rollbacks already queued"
                            );
                        }
                    }
                    _ => {
                        tracing::info!(signal, "stop signal received, draining");
                        let _ = stop_tx.send(true);
                    }
                }
            }
        })?;
    Ok(Signals {
        requests,
        stop: stop_rx,
    })
}

/// Completes when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn requests_come_out_in_signal_order_and_queued_reloads_fold() {
        let (sender, mut requests) = requests();
        assert!(sender.reload());
        assert!(
            !sender.reload(),
            "a second reload folds into the queued one"
        );
        assert!(sender.rollback());
        assert!(sender.rollback(), "rollbacks are not folded");
        runtime().block_on(async {
            assert!(matches!(requests.next().await, Some(Request::Reload(_))));
            // The reload channel is free again: this reload comes after both rollbacks.
            assert!(sender.reload());
            assert!(matches!(requests.next().await, Some(Request::Rollback(_))));
            assert!(matches!(requests.next().await, Some(Request::Rollback(_))));
            assert!(matches!(requests.next().await, Some(Request::Reload(_))));
            drop(sender);
            assert_eq!(requests.next().await, None);
        });
    }

    #[test]
    fn a_rollback_signalled_before_a_reload_runs_first() {
        let (sender, mut requests) = requests();
        assert!(sender.rollback());
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(sender.reload());
        runtime().block_on(async {
            assert!(matches!(requests.next().await, Some(Request::Rollback(_))));
            assert!(matches!(requests.next().await, Some(Request::Reload(_))));
        });
    }
}
