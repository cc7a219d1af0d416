//! Kernel ABI structs for the device transports: the only module that knows the
//! byte layout of what the sg, bsg and NVMe drivers read and write.
//!
//! Every struct is `#[repr(C)]` with its size and field offsets checked by tests
//! against the kernel headers (x86-64 values). The one `unsafe` here is the SG_IO
//! ioctl in [`sg`]; building the structs is safe, and handing their addresses to
//! the kernel is the transport's job (it keeps them alive, see
//! [`crate::transport::SqSink::push`]).

pub mod bsg;
pub mod nvme;
pub mod sg;
