//! The fetch scheduler of the chunk cache: which store fetch runs next, and
//! how many run at once.
//!
//! Every fetch has a [`Priority`]. A demand read (a process is blocked on
//! it) is admitted at once, whatever else is running or queued. Background
//! fetches (read-ahead, a start-up trace, `-prefetch`) wait in one queue,
//! highest priority first and in arrival order within a priority, and are
//! admitted while fewer than the limit run and their expected bytes fit a
//! budget (which bounds the memory fetches hold). A fetch already queued is
//! raised when a more urgent reader asks for the same chunk, so a demand
//! read never waits behind the prefetch that happened to ask first.
//!
//! The limit adapts to the store, in the manner of a gradient concurrency
//! limiter (TCP Vegas; Netflix's `concurrency-limits`): small fetches
//! measure the store's queue, since their time is mostly waiting. While
//! their latency stays near the lowest seen, the limit grows (a far store
//! with room for many requests ends up with many in flight); when it rises,
//! the store or the link is saturated and the limit shrinks, which keeps
//! the queue in front of a demand read short. A store that fails a fetch
//! (busy, unreachable) shrinks it too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a chunk is fetched, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// A reader is blocked on it.
    Demand = 0,
    /// Read-ahead: the rest of a file being read, the next files of a
    /// directory being read through.
    Ahead = 1,
    /// Listed in the flist's start-up trace.
    Trace = 2,
    /// `-prefetch`: everything else.
    Prefetch = 3,
}

impl Priority {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Priority::Demand,
            1 => Priority::Ahead,
            2 => Priority::Trace,
            _ => Priority::Prefetch,
        }
    }
}

/// Bounds of the adaptive limit on fetches in flight.
const MIN_LIMIT: f64 = 4.0;
const MAX_LIMIT: f64 = 80.0;
const INITIAL_LIMIT: f64 = 16.0;
/// Fetches up to this size measure the store's queue.
const PROBE_BYTES: u64 = 64 << 10;
/// Latency up to this many times the lowest seen is not queueing.
const TOLERANCE: f64 = 2.0;
/// Samples after which the lowest latency is measured afresh (the store or
/// the route to it may have changed).
const MIN_WINDOW: u32 = 500;

/// One fetch's claim on a place in the scheduler, shared by every reader
/// waiting for the same chunk.
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    bytes: u64,
    priority: AtomicU8,
}

impl Ticket {
    pub fn priority(&self) -> Priority {
        Priority::from_u8(self.priority.load(Ordering::Relaxed))
    }
}

/// A fetch admitted to run; dropping it frees its place.
pub struct Permit {
    scheduler: Arc<Scheduler>,
    bytes: u64,
    started: Instant,
    /// Whether dropping it frees a place (not when it was never handed out).
    armed: bool,
}

impl Permit {
    /// The fetch succeeded: its latency teaches the limit. The place is
    /// held until the permit is dropped (e.g. once the piece is written).
    pub fn succeeded(&self) {
        self.scheduler.sample(self.bytes, self.started.elapsed());
    }

    /// The store failed an attempt (busy, unreachable): ask less of it.
    pub fn congested(&self) {
        let mut state = self.scheduler.state.lock().unwrap();
        state.limit = (state.limit * 0.75).max(MIN_LIMIT);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.scheduler.state.lock().unwrap();
        state.running -= 1;
        state.running_bytes -= self.bytes;
        self.scheduler.dispatch(&mut state);
    }
}

struct Waiter {
    ticket: Arc<Ticket>,
    admit: oneshot::Sender<Permit>,
}

struct State {
    running: usize,
    running_bytes: u64,
    limit: f64,
    queue: BTreeMap<(Priority, u64), Waiter>,
    next_seq: u64,
    /// The lowest small-fetch latency of this window and of the last one.
    min_now: Option<Duration>,
    min_before: Option<Duration>,
    samples: u32,
    /// Recent small-fetch latency (moving average, seconds).
    recent: Option<f64>,
}

/// What the scheduler is doing, for logs, tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub running: usize,
    pub queued: usize,
    pub limit: usize,
}

pub struct Scheduler {
    state: Mutex<State>,
    byte_budget: u64,
    /// Itself, for the permits it hands out.
    me: Weak<Scheduler>,
}

impl Scheduler {
    /// A scheduler whose background fetches hold at most `byte_budget`
    /// expected bytes at once (one fetch always runs, whatever its size).
    pub fn new(byte_budget: u64) -> Arc<Self> {
        Arc::new_cyclic(|me| Scheduler {
            me: me.clone(),
            state: Mutex::new(State {
                running: 0,
                running_bytes: 0,
                limit: INITIAL_LIMIT,
                queue: BTreeMap::new(),
                next_seq: 0,
                min_now: None,
                min_before: None,
                samples: 0,
                recent: None,
            }),
            byte_budget,
        })
    }

    /// A ticket for a fetch of about `bytes` bytes.
    pub fn ticket(&self, priority: Priority, bytes: u64) -> Arc<Ticket> {
        let mut state = self.state.lock().unwrap();
        state.next_seq += 1;
        Arc::new(Ticket {
            seq: state.next_seq,
            bytes,
            priority: AtomicU8::new(priority as u8),
        })
    }

    /// Makes the ticket's fetch at least as urgent as `priority`, moving it
    /// up the queue if it waits there (a demand is admitted at once).
    pub fn raise(&self, ticket: &Ticket, priority: Priority) {
        let mut state = self.state.lock().unwrap();
        let old = ticket.priority();
        if priority >= old {
            return;
        }
        ticket.priority.store(priority as u8, Ordering::Relaxed);
        if let Some(waiter) = state.queue.remove(&(old, ticket.seq)) {
            state.queue.insert((priority, ticket.seq), waiter);
            self.dispatch(&mut state);
        }
    }

    /// Waits until the ticket's fetch may run.
    pub async fn admit(&self, ticket: &Arc<Ticket>) -> Permit {
        let receiver = {
            let mut state = self.state.lock().unwrap();
            let priority = ticket.priority();
            if priority == Priority::Demand || (state.queue.is_empty() && self.has_room(&state, ticket.bytes))
            {
                return self.start(&mut state, ticket.bytes);
            }
            let (admit, receiver) = oneshot::channel();
            state.queue.insert(
                (priority, ticket.seq),
                Waiter {
                    ticket: ticket.clone(),
                    admit,
                },
            );
            receiver
        };
        // The scheduler lives as long as any permit or waiter refers to it,
        // and it drops no waiter unanswered.
        receiver.await.expect("the scheduler answers every waiter")
    }

    pub fn load(&self) -> Load {
        let state = self.state.lock().unwrap();
        Load {
            running: state.running,
            queued: state.queue.len(),
            limit: state.limit as usize,
        }
    }

    fn has_room(&self, state: &State, bytes: u64) -> bool {
        state.running == 0
            || ((state.running as f64) < state.limit.floor()
                && state.running_bytes + bytes <= self.byte_budget)
    }

    fn start(&self, state: &mut State, bytes: u64) -> Permit {
        state.running += 1;
        state.running_bytes += bytes;
        Permit {
            scheduler: self.me.upgrade().expect("a scheduler in use is alive"),
            bytes,
            started: Instant::now(),
            armed: true,
        }
    }

    /// Admits waiters, most urgent first, while there is room (a demand
    /// always).
    fn dispatch(&self, state: &mut State) {
        while let Some(((priority, _), waiter)) = state.queue.first_key_value() {
            if *priority != Priority::Demand && !self.has_room(state, waiter.ticket.bytes) {
                break;
            }
            let (_, waiter) = state.queue.pop_first().expect("seen above");
            let permit = self.start(state, waiter.ticket.bytes);
            // A waiter that went away gives its place back at once (its
            // permit must not take this lock again when dropped).
            if let Err(mut permit) = waiter.admit.send(permit) {
                permit.armed = false;
                state.running -= 1;
                state.running_bytes -= permit.bytes;
            }
        }
    }

    fn sample(&self, bytes: u64, latency: Duration) {
        if bytes > PROBE_BYTES {
            return;
        }
        let mut state = self.state.lock().unwrap();
        state.samples += 1;
        if state.samples >= MIN_WINDOW {
            state.samples = 0;
            state.min_before = state.min_now.take();
        }
        state.min_now = Some(state.min_now.map_or(latency, |m| m.min(latency)));
        let floor = match (state.min_now, state.min_before) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(latency),
        };
        let recent = match state.recent {
            Some(r) => r * 0.9 + latency.as_secs_f64() * 0.1,
            None => latency.as_secs_f64(),
        };
        state.recent = Some(recent);
        // Only a limit that is being used is worth growing.
        if (state.running as f64) < state.limit / 2.0 {
            return;
        }
        let gradient = (TOLERANCE * floor.as_secs_f64().max(1e-6) / recent.max(1e-6)).clamp(0.5, 1.0);
        let target = state.limit * gradient + state.limit.sqrt();
        state.limit = (state.limit * 0.8 + target * 0.2).clamp(MIN_LIMIT, MAX_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits a ticket in a task; the receiver says when it was admitted.
    fn waiting(
        s: &Arc<Scheduler>,
        priority: Priority,
        bytes: u64,
    ) -> (Arc<Ticket>, oneshot::Receiver<Permit>) {
        let ticket = s.ticket(priority, bytes);
        let (tx, rx) = oneshot::channel();
        let (s, t) = (s.clone(), ticket.clone());
        tokio::spawn(async move {
            let _ = tx.send(s.admit(&t).await);
        });
        (ticket, rx)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn demand_first_then_priority_then_arrival() {
        let s = Scheduler::new(u64::MAX);
        let limit = s.load().limit;
        let mut running: Vec<Permit> = Vec::new();
        for _ in 0..limit {
            running.push(s.admit(&s.ticket(Priority::Prefetch, 1)).await);
        }
        let (_, mut prefetch) = waiting(&s, Priority::Prefetch, 1);
        let (_, mut trace) = waiting(&s, Priority::Trace, 1);
        let (_, mut ahead) = waiting(&s, Priority::Ahead, 1);
        settle().await;
        assert_eq!(s.load().queued, 3);
        // A demand read is admitted at once, the limit notwithstanding.
        let demand = s.admit(&s.ticket(Priority::Demand, 1)).await;
        assert_eq!(s.load().running, limit + 1);
        drop(demand);
        settle().await;
        assert!(
            ahead.try_recv().is_err(),
            "no room yet: the demand read was over the limit"
        );
        running.pop();
        settle().await;
        let first = ahead.try_recv().expect("read-ahead goes first");
        assert!(trace.try_recv().is_err() && prefetch.try_recv().is_err());
        drop(first);
        settle().await;
        let second = trace.try_recv().expect("then the trace");
        assert!(prefetch.try_recv().is_err());
        drop(second);
        settle().await;
        prefetch.try_recv().expect("then the prefetch");
    }

    #[tokio::test]
    async fn a_queued_fetch_raised_to_demand_runs_at_once() {
        let s = Scheduler::new(u64::MAX);
        let mut running = Vec::new();
        for _ in 0..s.load().limit {
            running.push(s.admit(&s.ticket(Priority::Prefetch, 1)).await);
        }
        let mut queued: Vec<_> = (0..1000).map(|_| waiting(&s, Priority::Prefetch, 1)).collect();
        settle().await;
        let (ticket, mut rx) = queued.pop().unwrap();
        assert!(rx.try_recv().is_err());
        s.raise(&ticket, Priority::Demand);
        settle().await;
        assert!(rx.try_recv().is_ok(), "raised to demand: admitted at once");
        assert!(queued[0].1.try_recv().is_err(), "the others still wait");
        drop(running);
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_background_fetches() {
        let s = Scheduler::new(1000);
        let a = s.admit(&s.ticket(Priority::Prefetch, 600)).await;
        let (_, mut b) = waiting(&s, Priority::Prefetch, 600);
        settle().await;
        assert!(b.try_recv().is_err(), "over the budget: waits");
        drop(a);
        settle().await;
        let b = b.try_recv().expect("admitted once the first is done");
        // A single fetch larger than the budget still runs when alone.
        drop(b);
        let _big = s.admit(&s.ticket(Priority::Prefetch, 5000)).await;
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_gives_its_place_back() {
        let s = Scheduler::new(u64::MAX);
        let mut running = Vec::new();
        for _ in 0..s.load().limit {
            running.push(s.admit(&s.ticket(Priority::Prefetch, 1)).await);
        }
        let (_, rx) = waiting(&s, Priority::Prefetch, 1);
        settle().await;
        drop(rx);
        running.clear();
        settle().await;
        assert_eq!(s.load().running, 0, "{:?}", s.load());
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_grows_on_a_far_store_and_shrinks_when_it_queues() {
        let s = Scheduler::new(u64::MAX);
        let start = s.load().limit;
        // A far store with room: every fetch takes 30 ms, however many run.
        for _ in 0..50 {
            let permits: Vec<Permit> = {
                let mut v = Vec::new();
                for _ in 0..s.load().limit {
                    v.push(s.admit(&s.ticket(Priority::Prefetch, 1000)).await);
                }
                v
            };
            tokio::time::sleep(Duration::from_millis(30)).await;
            permits.iter().for_each(Permit::succeeded);
        }
        let grown = s.load().limit;
        assert!(grown >= 4 * start, "limit {start} -> {grown}");
        // Now the store queues: latency grows with the fetches in flight.
        for _ in 0..50 {
            let n = s.load().limit;
            let permits: Vec<Permit> = {
                let mut v = Vec::new();
                for _ in 0..n {
                    v.push(s.admit(&s.ticket(Priority::Prefetch, 1000)).await);
                }
                v
            };
            tokio::time::sleep(Duration::from_millis(30) * n as u32 / 8).await;
            permits.iter().for_each(Permit::succeeded);
        }
        let shrunk = s.load().limit;
        assert!(shrunk < grown / 2, "limit {grown} -> {shrunk}");
    }
}
