//! Lease validity arithmetic (see the design note in the crate docs).

use crate::protocol::{LockState, MAX_DRIVES};
use crate::time::Nanos;

/// The time until which the lock may be trusted: the majority-th latest
/// `send_time + countdown` among held drives, minus `drift_margin`. `None` when fewer
/// than a majority of drives are held (the lock is not valid at all).
///
/// Send times, never reply times: the drive's countdown started after the send.
pub fn validity(state: &LockState, countdown: Nanos, drift_margin: Nanos) -> Option<Nanos> {
    let m = state.spec.majority() as usize;
    // At most 512 drives: the window ends fit on the stack (no allocation per call).
    let mut buf = [Nanos::ZERO; MAX_DRIVES as usize];
    let mut len = 0;
    for d in state.drives.iter().filter(|d| d.held) {
        let slot = buf.get_mut(len)?;
        *slot = d.sent + countdown;
        len += 1;
    }
    let ends = &mut buf[..len];
    if len < m || m == 0 {
        return None;
    }
    ends.sort_unstable_by(|a, b| b.cmp(a));
    Some(ends[m - 1] - drift_margin)
}

/// [`validity`] with the lock's own countdown.
pub fn lock_validity(state: &LockState, drift_margin: Nanos) -> Option<Nanos> {
    validity(state, state.spec.countdown(), drift_margin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testutil::*;
    use crate::protocol::{Acquire, Actions, Operation};
    use uring_sg::{Class, Mode};

    #[test]
    fn majority_th_latest_window() {
        let mut st = LockState::new(spec(5), 1);
        let c = Nanos::from_millis(1000);
        for (d, s) in [(0u16, 10u64), (1, 30), (2, 20), (3, 40)] {
            st.grant(d, Class::Exclusive, Nanos::from_millis(s), false);
        }
        // Windows end at 1010, 1030, 1020, 1040: the 3rd latest is 1020.
        assert_eq!(
            validity(&st, c, Nanos::from_millis(5)),
            Some(Nanos::from_millis(1015))
        );
        st.drop_drive(3);
        st.drop_drive(1);
        assert_eq!(validity(&st, c, Nanos::ZERO), None);
    }

    #[test]
    fn uses_send_time_not_reply_time() {
        let mut st = LockState::new(spec(3), 1);
        let mut op = Acquire::new(Mode::Exclusive, Nanos::MAX, false);
        let mut a = Actions::new();
        op.start(at(10), &mut st, &mut a);
        for d in 0..3 {
            a.clear();
            // Replies arrive 500 ms after the send.
            op.on_reply(at(510), &mut st, d, &ok(), &mut a);
        }
        assert_eq!(
            lock_validity(&st, Nanos::ZERO),
            Some(Nanos::from_millis(1010))
        );
    }
}
