//! How free job slots are shared between queues of different priority.
//!
//! Pure: the worker loop asks [`share_slots`] once per poll. Higher queues
//! come first; so that a busy high queue cannot starve the lower ones, every
//! [`FAIRNESS_PERIOD`]-th poll first gives one slot to each lower queue that
//! has ready jobs while a higher one has some too. Under saturation a
//! lower queue thus gets at least one of the slots freed in every period,
//! and none when it is empty.
//!
//! The lowest queue never takes the last `reserve` free slots (the worker
//! keeps one in eight of its slots so): work arriving on a higher queue
//! (a quiet account's, while a noisy one's flood was demoted to the low
//! queue) finds a free slot at once instead of waiting for a low job to end.

/// Every this many polls, lower queues are served one job each before strict
/// priority applies. 4 keeps high-priority latency within one extra job in
/// four polls while guaranteeing progress below it.
pub const FAIRNESS_PERIOD: u64 = 4;

/// Slots to take from each queue (same order as `ready`, highest priority
/// first), given `free` slots, each queue's ready count, the poll number,
/// and the slots the lowest queue leaves to the others.
pub fn share_slots(free: usize, ready: &[usize], tick: u64, reserve: usize) -> Vec<usize> {
    let mut take = vec![0; ready.len()];
    let mut free = free;
    if tick % FAIRNESS_PERIOD == FAIRNESS_PERIOD - 1 {
        for (i, &n) in ready.iter().enumerate().skip(1).rev() {
            if free == 0 {
                break;
            }
            if n > 0 && ready[..i].iter().any(|&h| h > 0) {
                take[i] = 1;
                free -= 1;
            }
        }
    }
    let lowest = ready.len().saturating_sub(1);
    for (i, &n) in ready.iter().enumerate() {
        let usable = if i == lowest && i > 0 {
            free.saturating_sub(reserve)
        } else {
            free
        };
        let more = (n - take[i]).min(usable);
        take[i] += more;
        free -= more;
    }
    take
}

/// Slots the lowest queue leaves to the higher ones: one in eight (none
/// for a worker of one queue or fewer than eight slots).
pub fn reserve(max_jobs: usize, queues: usize) -> usize {
    if queues > 1 { max_jobs / 8 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_priority_fills_slots_from_the_highest_queue_first() {
        assert_eq!(share_slots(5, &[3, 4, 9], 0, 0), vec![3, 2, 0]);
        assert_eq!(share_slots(10, &[1, 1, 1], 1, 0), vec![1, 1, 1]);
        assert_eq!(share_slots(0, &[3, 3, 3], 2, 0), vec![0, 0, 0]);
    }

    #[test]
    fn a_saturating_high_queue_leaves_one_slot_to_each_lower_queue_every_period() {
        let mut served = [0usize; 3];
        for tick in 0..(FAIRNESS_PERIOD * 10) {
            let take = share_slots(2, &[100, 100, 100], tick, 0);
            assert_eq!(
                take.iter().sum::<usize>(),
                2,
                "never more than the free slots"
            );
            for (s, t) in served.iter_mut().zip(take) {
                *s += t;
            }
        }
        assert_eq!(served, [60, 10, 10]);
    }

    #[test]
    fn fairness_never_wastes_slots_on_empty_queues() {
        assert_eq!(
            share_slots(3, &[5, 0, 0], FAIRNESS_PERIOD - 1, 0),
            vec![3, 0, 0]
        );
        assert_eq!(
            share_slots(1, &[5, 0, 2], FAIRNESS_PERIOD - 1, 0),
            vec![0, 0, 1]
        );
    }

    #[test]
    fn a_single_queue_takes_what_is_free() {
        for tick in 0..8 {
            assert_eq!(share_slots(4, &[10], tick, 3), vec![4]);
        }
    }

    #[test]
    fn the_lowest_queue_leaves_the_reserve_free_and_gets_no_period_slot_alone() {
        for tick in 0..8 {
            // A flood on the low queue alone: the reserve stays free.
            assert_eq!(share_slots(20, &[0, 0, 500], tick, 2), vec![0, 0, 18]);
            assert_eq!(share_slots(2, &[0, 0, 500], tick, 2), vec![0, 0, 0]);
        }
        // Work on a higher queue takes the reserve at once.
        assert_eq!(share_slots(2, &[0, 1, 500], 0, 2), vec![0, 1, 0]);
        // Higher queues busy: the period slot still reaches the low queue.
        assert_eq!(
            share_slots(2, &[9, 0, 500], FAIRNESS_PERIOD - 1, 2),
            vec![1, 0, 1]
        );
        assert_eq!(
            (
                reserve(10, 3),
                reserve(20, 3),
                reserve(7, 3),
                reserve(20, 1)
            ),
            (1, 2, 0, 0)
        );
    }
}
