//! Hierarchical timing wheel over integer ticks: O(1) arm and cancel by generation handle.
//!
//! Six levels of 64 slots each cover 2^36 ticks (795 days at 1 ms). A timer sits at the level
//! given by the highest bit in which its deadline differs from the current tick, so it is
//! cascaded down at most five times before it fires. Entries live in a slab; every slot is an
//! intrusive doubly linked list threaded through the slab, so cancel unlinks in O(1). Handles
//! carry a generation: a handle to a fired or cancelled timer never touches the slot's next tenant.
//!
//! Firing order: by deadline tick, and within one tick in arming order (cascading preserves list
//! order and a slot is always cascaded before anything can be armed directly into its target).

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
const LEVELS: usize = 6;
/// Deadlines further than this many ticks ahead are parked in the top level and re-placed
/// every time their slot comes round, so arbitrarily far deadlines still fire exactly on time.
const MAX_SPAN: u64 = 1 << (SLOT_BITS * LEVELS as u32);
const NIL: u32 = u32::MAX;

/// Identifies one armed timer; stale handles (fired, cancelled) are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// A timer removed from the wheel because its deadline tick was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<T> {
    pub handle: TimerHandle,
    pub deadline_tick: u64,
    pub value: T,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

#[derive(Debug)]
struct Node<T> {
    value: Option<T>,
    deadline_tick: u64,
    generation: u32,
    prev: u32,
    /// Next node in the slot list, or next free node when `value` is `None`.
    next: u32,
    level: u8,
    slot: u8,
}

/// A hierarchical timing wheel of values `T`, advanced tick by tick by its owner.
#[derive(Debug)]
pub struct TimingWheel<T> {
    lists: Vec<List>,
    occupied: [u64; LEVELS],
    nodes: Vec<Node<T>>,
    free_head: u32,
    len: usize,
    current_tick: u64,
}

impl<T> Default for TimingWheel<T> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<T> TimingWheel<T> {
    /// An empty wheel whose current (already processed) tick is `current_tick`.
    pub fn new(current_tick: u64) -> Self {
        Self::with_capacity(current_tick, 0)
    }

    /// An empty wheel with room for `capacity` timers before the slab grows.
    pub fn with_capacity(current_tick: u64, capacity: usize) -> Self {
        TimingWheel {
            lists: vec![List::EMPTY; SLOTS * LEVELS],
            occupied: [0; LEVELS],
            nodes: Vec::with_capacity(capacity),
            free_head: NIL,
            len: 0,
            current_tick,
        }
    }

    /// The last tick processed by [`advance_to`](Self::advance_to).
    pub fn current_tick(&self) -> u64 {
        self.current_tick
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms a timer for `deadline_tick`. A deadline at or before the current tick is due at the
    /// next tick (a tick is never processed twice).
    pub fn arm(&mut self, deadline_tick: u64, value: T) -> TimerHandle {
        let deadline_tick = deadline_tick.max(self.current_tick.saturating_add(1));
        let index = self.allocate(deadline_tick, value);
        self.place(index);
        self.len += 1;
        TimerHandle {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    /// Cancels the timer behind `handle` and returns its value; `None` if it already fired or
    /// was cancelled.
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        if !self.is_live(handle) {
            return None;
        }
        self.unlink(handle.index);
        self.len -= 1;
        self.release(handle.index)
    }

    /// The value of a live timer.
    pub fn get(&self, handle: TimerHandle) -> Option<&T> {
        if !self.is_live(handle) {
            return None;
        }
        self.nodes[handle.index as usize].value.as_ref()
    }

    /// The deadline tick of a live timer.
    pub fn deadline_tick(&self, handle: TimerHandle) -> Option<u64> {
        self.is_live(handle)
            .then(|| self.nodes[handle.index as usize].deadline_tick)
    }

    /// A lower bound on the next tick at which a timer can expire: no timer fires before it.
    /// `None` when the wheel is empty. Conservative: the next tick whenever level 0 holds a
    /// timer, else the next cascade boundary of the lowest occupied level.
    pub fn next_expiry_bound(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.next_tick_to_process(u64::MAX))
    }

    /// Every armed timer as (deadline tick, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.nodes
            .iter()
            .filter_map(|node| node.value.as_ref().map(|value| (node.deadline_tick, value)))
    }

    /// Processes every tick after the current one up to and including `tick`, in order, and
    /// hands each expired timer to `on_expired` (deadline order, arming order within a tick).
    /// Stretches without timers are skipped in O(1) per empty level.
    pub fn advance_to(&mut self, tick: u64, mut on_expired: impl FnMut(Expired<T>)) {
        while self.current_tick < tick {
            let next = self.next_tick_to_process(tick);
            self.current_tick = next;
            self.cascade(next);
            self.expire_slot(next, &mut on_expired);
        }
    }

    /// The next tick at which something can happen (a cascade or an expiry), capped at `limit`.
    fn next_tick_to_process(&self, limit: u64) -> u64 {
        let from = self.current_tick;
        match self.occupied.iter().position(|&bits| bits != 0) {
            None => limit,
            Some(0) => from + 1,
            Some(level) => {
                // Nothing at lower levels: the next event is the next boundary of `level`,
                // where one of its slots is cascaded.
                let span = 1u64 << (SLOT_BITS * level as u32);
                let boundary = (from / span + 1).saturating_mul(span);
                boundary.min(limit)
            }
        }
    }

    /// At a tick that is a boundary of level L, the level-L slot for the new block moves down.
    /// Higher levels first, so a timer can drop several levels within one tick.
    fn cascade(&mut self, tick: u64) {
        for level in (1..LEVELS).rev() {
            let span_below = SLOT_BITS * level as u32;
            if tick & ((1u64 << span_below) - 1) != 0 {
                continue;
            }
            let slot = ((tick >> span_below) & SLOT_MASK) as usize;
            let mut index = self.take_list(level, slot);
            while index != NIL {
                let next = self.nodes[index as usize].next;
                self.place(index);
                index = next;
            }
        }
    }

    fn expire_slot(&mut self, tick: u64, on_expired: &mut impl FnMut(Expired<T>)) {
        let slot = (tick & SLOT_MASK) as usize;
        let mut index = self.take_list(0, slot);
        while index != NIL {
            let node = &self.nodes[index as usize];
            let next = node.next;
            if node.deadline_tick <= tick {
                let handle = TimerHandle {
                    index,
                    generation: node.generation,
                };
                let deadline_tick = node.deadline_tick;
                self.len -= 1;
                if let Some(value) = self.release(index) {
                    on_expired(Expired {
                        handle,
                        deadline_tick,
                        value,
                    });
                }
            } else {
                self.place(index);
            }
            index = next;
        }
    }

    fn is_live(&self, handle: TimerHandle) -> bool {
        self.nodes
            .get(handle.index as usize)
            .is_some_and(|node| node.generation == handle.generation && node.value.is_some())
    }

    fn allocate(&mut self, deadline_tick: u64, value: T) -> u32 {
        if self.free_head != NIL {
            let index = self.free_head;
            let node = &mut self.nodes[index as usize];
            self.free_head = node.next;
            node.value = Some(value);
            node.deadline_tick = deadline_tick;
            return index;
        }
        let index = self.nodes.len() as u32;
        self.nodes.push(Node {
            value: Some(value),
            deadline_tick,
            generation: 0,
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
        });
        index
    }

    fn release(&mut self, index: u32) -> Option<T> {
        let node = &mut self.nodes[index as usize];
        let value = node.value.take();
        node.generation = node.generation.wrapping_add(1);
        node.prev = NIL;
        node.next = self.free_head;
        self.free_head = index;
        value
    }

    /// Appends a node to the tail of the slot matching its deadline relative to the current tick.
    fn place(&mut self, index: u32) {
        let current = self.current_tick;
        let deadline = self.nodes[index as usize].deadline_tick;
        let placed_at = if deadline.saturating_sub(current) >= MAX_SPAN {
            current.saturating_add(MAX_SPAN - 1)
        } else {
            deadline.max(current)
        };
        let significant_bit = 63 - ((placed_at ^ current) | SLOT_MASK).leading_zeros();
        // Crossing a 2^36 boundary can set a bit above the top level: such timers wait in the
        // top level, whose slot comes round before their deadline and re-places them.
        let level = ((significant_bit / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((placed_at >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize;
        let list_index = level * SLOTS + slot;
        let tail = self.lists[list_index].tail;
        {
            let node = &mut self.nodes[index as usize];
            node.level = level as u8;
            node.slot = slot as u8;
            node.prev = tail;
            node.next = NIL;
        }
        if tail == NIL {
            self.lists[list_index].head = index;
        } else {
            self.nodes[tail as usize].next = index;
        }
        self.lists[list_index].tail = index;
        self.occupied[level] |= 1u64 << slot;
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, level, slot) = {
            let node = &self.nodes[index as usize];
            (
                node.prev,
                node.next,
                node.level as usize,
                node.slot as usize,
            )
        };
        let list_index = level * SLOTS + slot;
        if prev == NIL {
            self.lists[list_index].head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list_index].tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        if self.lists[list_index].head == NIL {
            self.occupied[level] &= !(1u64 << slot);
        }
    }

    /// Detaches a whole slot list and returns its head; nodes keep their `next` links.
    fn take_list(&mut self, level: usize, slot: usize) -> u32 {
        let list_index = level * SLOTS + slot;
        let head = self.lists[list_index].head;
        self.lists[list_index] = List::EMPTY;
        self.occupied[level] &= !(1u64 << slot);
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn fire_all<T>(wheel: &mut TimingWheel<T>, tick: u64) -> Vec<(u64, T)> {
        let mut fired = Vec::new();
        wheel.advance_to(tick, |expired| {
            fired.push((expired.deadline_tick, expired.value))
        });
        fired
    }

    #[test]
    fn fires_in_deadline_order_then_arming_order() {
        let mut wheel = TimingWheel::new(0);
        wheel.arm(5, "e");
        wheel.arm(3, "c");
        wheel.arm(70, "f");
        wheel.arm(3, "d");
        wheel.arm(1, "a");
        wheel.arm(2, "b");
        wheel.arm(5000, "g");
        assert_eq!(
            fire_all(&mut wheel, 10_000),
            vec![
                (1, "a"),
                (2, "b"),
                (3, "c"),
                (3, "d"),
                (5, "e"),
                (70, "f"),
                (5000, "g")
            ]
        );
        assert!(wheel.is_empty());
    }

    #[test]
    fn nothing_fires_before_its_tick() {
        let mut wheel = TimingWheel::new(0);
        wheel.arm(4096, 1);
        assert!(fire_all(&mut wheel, 4095).is_empty());
        assert_eq!(wheel.len(), 1);
        assert_eq!(fire_all(&mut wheel, 4096), vec![(4096, 1)]);
    }

    #[test]
    fn past_deadline_fires_on_next_tick() {
        let mut wheel = TimingWheel::new(100);
        let handle = wheel.arm(7, ());
        assert_eq!(wheel.deadline_tick(handle), Some(101));
        assert_eq!(fire_all(&mut wheel, 101).len(), 1);
    }

    #[test]
    fn cancel_removes_and_stale_handles_are_ignored() {
        let mut wheel = TimingWheel::new(0);
        let first = wheel.arm(10, "first");
        let second = wheel.arm(10, "second");
        assert_eq!(wheel.cancel(first), Some("first"));
        assert_eq!(wheel.cancel(first), None);
        // The freed node is reused; the old handle must not reach the new timer.
        let third = wheel.arm(12, "third");
        assert_eq!(wheel.cancel(first), None);
        assert_eq!(wheel.get(third), Some(&"third"));
        assert_eq!(
            fire_all(&mut wheel, 20),
            vec![(10, "second"), (12, "third")]
        );
        assert_eq!(wheel.cancel(second), None);
        assert_eq!(wheel.cancel(third), None);
    }

    #[test]
    fn far_deadlines_beyond_the_wheel_span_fire_on_time() {
        let mut wheel = TimingWheel::new(0);
        let far = MAX_SPAN * 2 + 17;
        wheel.arm(far, "far");
        wheel.arm(MAX_SPAN - 1, "edge");
        assert_eq!(fire_all(&mut wheel, MAX_SPAN - 2), vec![]);
        assert_eq!(fire_all(&mut wheel, far - 1), vec![(MAX_SPAN - 1, "edge")]);
        assert_eq!(fire_all(&mut wheel, far), vec![(far, "far")]);
    }

    #[test]
    fn crossing_the_top_level_boundary_keeps_deadlines() {
        let start = MAX_SPAN - 3;
        let mut wheel = TimingWheel::new(start);
        wheel.arm(MAX_SPAN + 5, "after the wrap");
        wheel.arm(MAX_SPAN - 1, "before the wrap");
        wheel.arm(start + MAX_SPAN + 100, "a full span later");
        assert_eq!(
            fire_all(&mut wheel, MAX_SPAN + 5),
            vec![
                (MAX_SPAN - 1, "before the wrap"),
                (MAX_SPAN + 5, "after the wrap")
            ]
        );
        assert_eq!(fire_all(&mut wheel, start + MAX_SPAN + 99), vec![]);
        assert_eq!(
            fire_all(&mut wheel, start + MAX_SPAN + 100),
            vec![(start + MAX_SPAN + 100, "a full span later")]
        );
    }

    #[test]
    fn the_expiry_bound_skips_quiet_stretches() {
        let mut wheel = TimingWheel::new(1_000);
        assert_eq!(wheel.next_expiry_bound(), None);
        wheel.arm(1_000 + 60_000, "a minute away");
        let far = wheel.next_expiry_bound().unwrap_or(0);
        assert!(far > 1_001 && far <= 61_000, "bound {far}");
        wheel.arm(1_002, "soon");
        assert_eq!(wheel.next_expiry_bound(), Some(1_001));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Arm(u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300_000).prop_map(Op::Arm),
            2 => any::<usize>().prop_map(Op::Cancel),
            2 => (0u64..20_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The wheel behaves like a sorted map keyed by (deadline, arming sequence).
        #[test]
        fn matches_a_sorted_reference_model(start in 0u64..1_000_000, ops in proptest::collection::vec(op(), 1..200)) {
            let mut wheel = TimingWheel::new(start);
            let mut model: BTreeMap<(u64, u64), TimerHandle> = BTreeMap::new();
            let mut handles: Vec<(TimerHandle, (u64, u64))> = Vec::new();
            let mut sequence = 0u64;
            for op in ops {
                match op {
                    Op::Arm(offset) => {
                        let deadline = wheel.current_tick() + offset;
                        let handle = wheel.arm(deadline, sequence);
                        let effective = deadline.max(wheel.current_tick() + 1);
                        model.insert((effective, sequence), handle);
                        handles.push((handle, (effective, sequence)));
                        sequence += 1;
                    }
                    Op::Cancel(pick) => {
                        if handles.is_empty() { continue; }
                        let (handle, model_key) = handles[pick % handles.len()];
                        let expected = model.remove(&model_key).map(|_| model_key.1);
                        prop_assert_eq!(wheel.cancel(handle), expected);
                    }
                    Op::Advance(by) => {
                        let target = wheel.current_tick() + by;
                        let fired = fire_all(&mut wheel, target);
                        let still_armed = model.split_off(&(target + 1, 0));
                        let expected: Vec<(u64, u64)> = model.keys().copied().collect();
                        model = still_armed;
                        prop_assert_eq!(fired, expected);
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
                // The expiry bound never passes the earliest armed deadline.
                let earliest = model.keys().next().map(|&(deadline, _)| deadline);
                let bound = wheel.next_expiry_bound();
                prop_assert_eq!(bound.is_some(), earliest.is_some());
                if let (Some(bound), Some(earliest)) = (bound, earliest) {
                    prop_assert!(bound <= earliest, "bound {} after deadline {}", bound, earliest);
                    prop_assert!(bound > wheel.current_tick());
                }
            }
        }
    }
}
