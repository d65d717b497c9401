//! Batching of provider calls: items for the same key that come close
//! together go out in one call, and each caller gets its own answer.
//!
//! A batch opens with its first item and goes when it holds `max` items
//! or `within` has passed since its first came, and fewer than `calls`
//! calls of its key are in flight. With a `within` of zero, what piles up
//! while every call is in flight goes together in the next, and nothing
//! waits when a call is free, the way group commit works.
//!
//! The call runs in a task of its own: a caller that gives up (its job
//! aborted) does not take the others' call with it. A call that panics
//! answers nobody; each of its callers sees [`Batcher::submit`] return
//! `None`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus::Histogram;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

/// When a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Most items in one call (at least 1).
    pub max: usize,
    /// Longest an item waits for others after the first of its batch came.
    pub within: Duration,
    /// Most calls of a key in flight at once (at least 1).
    pub calls: usize,
}

/// Makes one call for a batch: one answer per item, in their order.
pub type Deliver<K, I, O> = Arc<dyn Fn(K, Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + Sync>;

/// Collects items per key and delivers them in batches.
pub struct Batcher<K, I, O> {
    slots: Arc<Mutex<HashMap<K, Slot<I, O>>>>,
    deliver: Deliver<K, I, O>,
    /// Items per call.
    sizes: Option<Histogram>,
}

impl<K, I, O> Clone for Batcher<K, I, O> {
    fn clone(&self) -> Self {
        Batcher {
            slots: self.slots.clone(),
            deliver: self.deliver.clone(),
            sizes: self.sizes.clone(),
        }
    }
}

/// The items of one key waiting for their call.
struct Slot<I, O> {
    rule: Rule,
    waiting: Vec<Waiting<I, O>>,
    /// Rung when `waiting` reaches `rule.max`.
    full: Arc<Notify>,
    /// Calls that may still go while others are in flight; the slot (and
    /// so this cap) outlives the calls in flight.
    free: Arc<Semaphore>,
    /// Whether a flusher runs for it.
    flushing: bool,
}

impl<I, O> Slot<I, O> {
    /// Whether it can go: nothing waits, no flusher, no call in flight.
    fn idle(&self) -> bool {
        self.waiting.is_empty()
            && !self.flushing
            && self.free.available_permits() == self.rule.calls
    }
}

struct Waiting<I, O> {
    item: I,
    answer: oneshot::Sender<O>,
    came: Instant,
}

impl<K, I, O> Batcher<K, I, O>
where
    K: Hash + Eq + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// A batcher making its calls with `deliver`.
    pub fn new(deliver: Deliver<K, I, O>) -> Self {
        Batcher {
            slots: Arc::default(),
            deliver,
            sizes: None,
        }
    }

    /// Observes the number of items of each call in `sizes`.
    pub fn with_metrics(mut self, sizes: Histogram) -> Self {
        self.sizes = Some(sizes);
        self
    }

    /// Adds `item` to the batch of `key` (under `rule`, taken from the
    /// item that opens a key's first batch) and waits for its answer;
    /// `None` when the call made for it panicked.
    pub async fn submit(&self, key: K, rule: Rule, item: I) -> Option<O> {
        let (answer, rx) = oneshot::channel();
        let waiting = Waiting {
            item,
            answer,
            came: Instant::now(),
        };
        let start = {
            let mut slots = self.slots.lock().expect("batch slots");
            let slot = slots.entry(key.clone()).or_insert_with(|| {
                let calls = rule.calls.max(1);
                Slot {
                    rule: Rule {
                        max: rule.max.max(1),
                        calls,
                        ..rule
                    },
                    waiting: Vec::new(),
                    full: Arc::new(Notify::new()),
                    free: Arc::new(Semaphore::new(calls)),
                    flushing: false,
                }
            });
            slot.waiting.push(waiting);
            if slot.waiting.len() >= slot.rule.max {
                slot.full.notify_one();
            }
            !std::mem::replace(&mut slot.flushing, true)
        };
        if start {
            // The key's flusher: it lives while the key has items.
            tokio::spawn(self.clone().flush(key));
        }
        rx.await.ok()
    }

    /// Delivers the batches of `key` until none is left. The slot stays
    /// while its flusher runs, and with it its rule, bell and calls.
    async fn flush(self, key: K) {
        let (rule, full, free) = {
            let slots = self.slots.lock().expect("batch slots");
            let slot = &slots[&key];
            (slot.rule, slot.full.clone(), slot.free.clone())
        };
        loop {
            let Some((since, ready)) = self.look(&key) else {
                return;
            };
            if !ready {
                let deadline = since + rule.within;
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = full.notified() => {}
                }
                if Instant::now() < deadline && !self.look(&key).is_some_and(|(_, ready)| ready) {
                    // A stale wake-up: wait on.
                    continue;
                }
            }
            // Items keep coming while every call is in flight.
            let call_slot = free.clone().acquire_owned().await.expect("never closed");
            let batch = {
                let mut slots = self.slots.lock().expect("batch slots");
                let slot = slots.get_mut(&key).expect("a flushed key keeps its slot");
                let n = slot.waiting.len().min(rule.max);
                slot.waiting.drain(..n).collect::<Vec<_>>()
            };
            let (items, answers): (Vec<I>, Vec<oneshot::Sender<O>>) =
                batch.into_iter().map(|w| (w.item, w.answer)).unzip();
            if let Some(sizes) = &self.sizes {
                sizes.observe(items.len() as f64);
            }
            let call = (self.deliver)(key.clone(), items);
            let (this, key) = (self.clone(), key.clone());
            tokio::spawn(async move {
                if let Ok(outs) = std::panic::AssertUnwindSafe(call).catch_unwind().await {
                    for (answer, out) in answers.into_iter().zip(outs) {
                        let _ = answer.send(out);
                    }
                }
                let mut slots = this.slots.lock().expect("batch slots");
                drop(call_slot);
                if slots.get(&key).is_some_and(Slot::idle) {
                    slots.remove(&key);
                }
            });
        }
    }

    /// When the oldest item of `key` came and whether its batch should go
    /// now (full, or its time is up); `None` when nothing waits: its
    /// flusher ends (and the slot goes, unless calls are in flight).
    fn look(&self, key: &K) -> Option<(Instant, bool)> {
        let mut slots = self.slots.lock().expect("batch slots");
        let slot = slots.get_mut(key)?;
        let Some(first) = slot.waiting.first() else {
            slot.flushing = false;
            if slot.idle() {
                slots.remove(key);
            }
            return None;
        };
        let since = first.came;
        let ready =
            slot.waiting.len() >= slot.rule.max || Instant::now() >= since + slot.rule.within;
        Some((since, ready))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(calls: Arc<AtomicUsize>, took: Duration) -> Batcher<&'static str, u32, u32> {
        Batcher::new(Arc::new(move |_key, items: Vec<u32>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(took).await;
                items.into_iter().map(|i| i * 10).collect()
            }
            .boxed()
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn items_of_a_key_go_together_when_full_or_when_their_time_is_up() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = counting(calls.clone(), Duration::from_millis(5));
        let rule = Rule {
            max: 3,
            within: Duration::from_secs(2),
            calls: 4,
        };
        let started = Instant::now();
        // Three fill a batch at once; the fourth and fifth wait their 2 s.
        let answers = futures::future::join_all((1..=5).map(|i| {
            let b = b.clone();
            async move { (b.submit("k", rule, i).await, started.elapsed()) }
        }))
        .await;
        let got: Vec<_> = answers.iter().map(|a| a.0).collect();
        assert_eq!(got, [Some(10), Some(20), Some(30), Some(40), Some(50)]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(answers[0].1 < Duration::from_millis(100), "{answers:?}");
        assert!(answers[4].1 >= Duration::from_secs(2), "{answers:?}");
        // Another key is another batch; the emptied key was dropped.
        assert_eq!(b.submit("other", rule, 7).await, Some(70));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(b.slots.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_wait_what_piles_up_behind_a_call_goes_in_the_next() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = counting(calls.clone(), Duration::from_millis(10));
        let rule = Rule {
            max: 100,
            within: Duration::ZERO,
            calls: 1,
        };
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.submit("k", rule, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let rest = futures::future::join_all((2..=20).map(|i| b.submit("k", rule, i))).await;
        assert_eq!(first.await.unwrap(), Some(10));
        assert!(rest.iter().all(Option::is_some));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one alone, then 19 together"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn items_coming_one_by_one_wait_for_a_free_call_and_go_together() {
        let calls = Arc::new(AtomicUsize::new(0));
        let b = counting(calls.clone(), Duration::from_millis(10));
        let rule = Rule {
            max: 100,
            within: Duration::ZERO,
            calls: 1,
        };
        // One every millisecond for 20 ms, each call taking 10 ms: the first
        // goes alone, the rest in the calls that follow as each frees.
        let items = (0..20).map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i)).await;
                b.submit("k", rule, i as u32).await
            })
        });
        for item in futures::future::join_all(items).await {
            assert!(item.unwrap().is_some());
        }
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=4).contains(&n), "20 items in {n} calls");
    }

    #[tokio::test]
    async fn a_call_that_panics_answers_none_and_the_key_still_works() {
        let b: Batcher<u8, u32, u32> = Batcher::new(Arc::new(|_k, items: Vec<u32>| {
            async move {
                assert!(items[0] != 0, "boom");
                items
            }
            .boxed()
        }));
        let rule = Rule {
            max: 1,
            within: Duration::ZERO,
            calls: 1,
        };
        assert_eq!(b.submit(1, rule, 0).await, None);
        assert_eq!(b.submit(1, rule, 5).await, Some(5));
    }
}
