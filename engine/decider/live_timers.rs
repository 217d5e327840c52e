//! The timer service as the engine's timer sink: what `veto run` arms its sequence rules with.

use std::sync::Arc;
use std::time::Duration;

use super::TimerSink;
use crate::event::PaymentEvent;
use crate::timer::{Clock, TimerIds, TimerPayload, TimerService};

impl<C: Clock> TimerSink for TimerService<C> {
    /// One allocation per timer: its key, event id and transaction id in one shared string.
    fn arm(&self, rule: &Arc<str>, key: &str, event: &PaymentEvent, within: Duration) {
        let timer = TimerPayload {
            rule: Arc::clone(rule),
            ids: TimerIds::new(key, &event.event_id, event.txn_id.as_deref()),
        };
        TimerService::arm(self, timer, within);
    }

    fn cancel(&self, rule: &Arc<str>, key: &str) {
        TimerService::cancel(self, rule, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::{recv_within, ManualClock, TimerConfig};

    #[test]
    fn armed_through_the_sink_a_timer_fires_with_its_event_ids() {
        let clock = ManualClock::new(0);
        let started = TimerService::start_with_clock(TimerConfig::default(), clock.clone());
        let Ok((service, mut fired)) = started else {
            panic!("timer thread did not start");
        };
        let rule: Arc<str> = Arc::from("auth_without_capture");
        let mut event = PaymentEvent {
            event_id: "evt-1".to_owned(),
            txn_id: Some("txn-1".to_owned()),
            ..PaymentEvent::default()
        };
        let sink: &dyn TimerSink = &service;
        sink.arm(&rule, "txn-1", &event, Duration::from_millis(5));
        // a second arm of an armed key is ignored; another key with another txn_id is armed
        sink.arm(&rule, "txn-1", &event, Duration::from_millis(1));
        event.txn_id = Some("txn-other".to_owned());
        sink.arm(&rule, "user-7", &event, Duration::from_millis(50));
        sink.cancel(&rule, "user-7");
        assert_eq!(service.armed(), 1);
        clock.advance(Duration::from_millis(5));
        let timer = recv_within(&mut fired, Duration::from_secs(10)).expect("the timer fires");
        assert_eq!(&*timer.payload.rule, "auth_without_capture");
        assert_eq!(timer.payload.event_id(), "evt-1");
        assert_eq!(timer.payload.txn_id(), Some("txn-1"));
        assert_eq!(timer.payload.key(), "txn-1");
        assert_eq!(service.armed(), 0);
        // a transaction id other than the key is kept beside it
        let ids = TimerIds::new("user-7", "evt-2", Some("txn-other"));
        let got = (ids.key(), ids.event_id(), ids.txn_id());
        assert_eq!(got, ("user-7", "evt-2", Some("txn-other")));
        assert_eq!(TimerIds::new("k", "e", None).txn_id(), None);
    }
}
