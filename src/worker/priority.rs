//! How free job slots are shared between queues of different priority.
//!
//! Pure: the worker loop asks [`share_slots`] once per poll. Higher queues
//! come first; so that a busy high queue cannot starve the lower ones, every
//! [`FAIRNESS_PERIOD`]-th poll first gives one slot to each lower queue that
//! has ready jobs. Under saturation a lower queue thus gets at least one of
//! the slots freed in every period, and none when it is empty.

/// Every this many polls, lower queues are served one job each before strict
/// priority applies. 4 keeps high-priority latency within one extra job in
/// four polls while guaranteeing progress below it.
pub const FAIRNESS_PERIOD: u64 = 4;

/// Slots to take from each queue (same order as `ready`, highest priority
/// first), given `free` slots, each queue's ready count, and the poll number.
pub fn share_slots(free: usize, ready: &[usize], tick: u64) -> Vec<usize> {
    let mut take = vec![0; ready.len()];
    let mut free = free;
    if tick % FAIRNESS_PERIOD == FAIRNESS_PERIOD - 1 {
        for (i, &n) in ready.iter().enumerate().skip(1).rev() {
            if free == 0 {
                break;
            }
            if n > 0 {
                take[i] = 1;
                free -= 1;
            }
        }
    }
    for (i, &n) in ready.iter().enumerate() {
        let more = (n - take[i]).min(free);
        take[i] += more;
        free -= more;
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_priority_fills_slots_from_the_highest_queue_first() {
        assert_eq!(share_slots(5, &[3, 4, 9], 0), vec![3, 2, 0]);
        assert_eq!(share_slots(10, &[1, 1, 1], 1), vec![1, 1, 1]);
        assert_eq!(share_slots(0, &[3, 3, 3], 2), vec![0, 0, 0]);
    }

    #[test]
    fn a_saturating_high_queue_leaves_one_slot_to_each_lower_queue_every_period() {
        let mut served = [0usize; 3];
        for tick in 0..(FAIRNESS_PERIOD * 10) {
            let take = share_slots(2, &[100, 100, 100], tick);
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
            share_slots(3, &[5, 0, 0], FAIRNESS_PERIOD - 1),
            vec![3, 0, 0]
        );
        assert_eq!(
            share_slots(1, &[5, 0, 2], FAIRNESS_PERIOD - 1),
            vec![0, 0, 1]
        );
    }

    #[test]
    fn a_single_queue_takes_what_is_free() {
        for tick in 0..8 {
            assert_eq!(share_slots(4, &[10], tick), vec![4]);
        }
    }
}
