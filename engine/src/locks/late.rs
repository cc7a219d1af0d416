//! Replies that arrive after their operation's caller was answered (stragglers),
//! absorbed against the lock's **current** state rather than the finished
//! operation's:
//!
//! | late reply | lock held in that class, nothing reshaping it | otherwise |
//! | --- | --- | --- |
//! | trylock / break granted | the drive joins (or its window moves to this send time) | unlock it (it may be a lock we gave up) |
//! | trylock / break unknown (timeout, I/O) or "already held" | nothing (it does not count) | unlock it (it may have been granted) |
//! | refresh granted | the drive's window moves to this send time if later | nothing |
//! | refresh "expired" / "not found" | the drive is dropped (and re-trylocked if "not found") | nothing |
//! | anything else (unlock, reads, busy) | nothing | nothing |
//!
//! "Reshaping" is a convert or a release running: their own commands decide the
//! drive's class and membership, so a late grant is given back instead.

use uring_sg::transport::{Reply, Request};
use uring_sg::{DriveError, MutexOp};

use super::{InFlight, LockTable, LockspaceCtl, OpKind, Owner};
use crate::protocol::Now;

impl<C, L: LockspaceCtl> LockTable<C, L> {
    /// Absorbs the late reply to `f` on lock `k`.
    pub(super) fn absorb_late(&mut self, now: Now, k: usize, f: &InFlight, reply: &Reply) {
        let Request::Mutex { op, record } = f.req else {
            return;
        };
        let e = &mut self.locks[k];
        let d = f.drive_no;
        let class = record.class;
        let calm = e.running.as_ref().is_none_or(|r| {
            matches!(
                r.kind,
                OpKind::Renew | OpKind::ReadLvb | OpKind::HostCount | OpKind::Mode
            )
        });
        let joinable = e.held && calm && e.state.mode.is_some_and(|m| m.class() == class);
        let hold = e.state.drives.get(d as usize).copied();
        let mut unlock = false;
        let mut relock = false;
        match (op, reply.result) {
            (MutexOp::Trylock | MutexOp::Break, Ok(())) => {
                if joinable {
                    let later = hold.is_none_or(|h| !h.held || h.sent < f.sent);
                    if later {
                        e.state.grant(d, class, f.sent, op == MutexOp::Break);
                    }
                } else {
                    unlock = true;
                }
            }
            (MutexOp::Trylock | MutexOp::Break, Err(err))
                if err.is_io() || err == DriveError::AlreadyHeld =>
            {
                unlock = !(joinable || e.held && hold.is_some_and(|h| h.held));
            }
            (MutexOp::Refresh, Ok(())) => {
                if let (true, Some(h)) = (joinable, hold) {
                    if h.held && h.class == class && h.sent < f.sent {
                        e.state.grant(d, class, f.sent, false);
                    }
                }
            }
            (MutexOp::Refresh, Err(err @ (DriveError::Expired | DriveError::NotFound)))
                if e.held && hold.is_some_and(|h| h.held && h.sent <= f.sent) =>
            {
                e.state.drop_drive(d);
                relock = joinable && err == DriveError::NotFound;
            }
            _ => {}
        }
        if unlock {
            let req = e.state.unlock_request(class, None, now);
            self.emit(now, k, d, Owner::Cleanup, req);
        } else if relock {
            let req = e.state.request(MutexOp::Trylock, class, now);
            self.emit(now, k, d, Owner::Cleanup, req);
        }
    }
}
