//! The reactor's ring: a plain one, or an SQE128/CQE32 one when a drive needs
//! `uring_cmd` (NVMe admin, bsg). Same operations either way.

use std::io;
use std::time::Duration;

use io_uring::{cqueue, squeue};
use uring_sg::driver::Driver;
use uring_sg::transport::{Completion, EnqueueError, Request, Transport};

/// A [`Driver`] on either ring size.
pub enum Ring {
    /// 64-byte SQEs, 16-byte CQEs.
    Small(Driver),
    /// 128-byte SQEs, 32-byte CQEs.
    Big(Driver<squeue::Entry128, cqueue::Entry32>),
}

impl Ring {
    /// A ring with `entries` SQ slots; `big` for SQE128/CQE32.
    pub fn new(entries: u32, big: bool) -> io::Result<Ring> {
        Ok(if big {
            Ring::Big(Driver::new_big(entries)?)
        } else {
            Ring::Small(Driver::new(entries)?)
        })
    }

    /// See [`Driver::add`].
    pub fn add(&mut self, t: Box<dyn Transport>) -> usize {
        match self {
            Ring::Small(d) => d.add(t),
            Ring::Big(d) => d.add(t),
        }
    }

    /// See [`Driver::enqueue`].
    pub fn enqueue(
        &mut self,
        drive: usize,
        tag: u64,
        req: &Request,
        timeout: Duration,
    ) -> Result<(), EnqueueError> {
        match self {
            Ring::Small(d) => d.enqueue(drive, tag, req, timeout),
            Ring::Big(d) => d.enqueue(drive, tag, req, timeout),
        }
    }

    /// See [`Driver::turn`].
    pub fn turn(
        &mut self,
        max_wait: Duration,
        done: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<()> {
        match self {
            Ring::Small(d) => d.turn(max_wait, done),
            Ring::Big(d) => d.turn(max_wait, done),
        }
    }
}
