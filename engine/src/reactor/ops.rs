//! From a caller's [`OpRequest`] to the protocol operation that runs it.

use std::time::Instant;

use super::msg::OpRequest;
use super::op::{DynOp, Erased, OpKind, OpOutput};
use crate::api::EngineError;
use crate::protocol::{Acquire, Convert, GetHostCount, GetMode, ReadLvb, Release, Renew};
use crate::time::Nanos;

/// Builds the state machine for `req`; `deadline` maps caller instants onto the
/// reactor's monotonic scale. Requests that need no drive command (write LVB) are
/// handled by the reactor itself and refused here.
pub fn build(
    req: &OpRequest,
    deadline: &dyn Fn(Instant) -> Nanos,
) -> Result<Box<dyn DynOp>, EngineError> {
    Ok(match req {
        OpRequest::Acquire {
            mode,
            deadline: d,
            no_wait,
            ..
        } => Erased::boxed(
            Acquire::new(*mode, deadline(*d), *no_wait),
            OpKind::Acquire,
            |_| OpOutput::Done,
        ),
        OpRequest::Release => Erased::boxed(Release::new(), OpKind::Release, |()| OpOutput::Done),
        OpRequest::Renew => Erased::boxed(Renew::new(), OpKind::Renew, |_| OpOutput::Done),
        OpRequest::Convert { mode, .. } => {
            Erased::boxed(Convert::new(*mode), OpKind::Convert, |()| OpOutput::Done)
        }
        OpRequest::ReadLvb => Erased::boxed(ReadLvb::new(), OpKind::ReadLvb, OpOutput::Lvb),
        OpRequest::HostCount { .. } => Erased::boxed(GetHostCount::new(), OpKind::HostCount, |c| {
            OpOutput::HostCount {
                others: c.others,
                held_by_self: c.held_by_self,
            }
        }),
        OpRequest::Mode { .. } => Erased::boxed(GetMode::new(), OpKind::Mode, OpOutput::Mode),
        OpRequest::WriteLvb(_) => {
            return Err(EngineError::InvalidArgument(
                "write LVB runs no drive operation".into(),
            ))
        }
    })
}
