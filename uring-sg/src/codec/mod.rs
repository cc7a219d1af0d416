//! The IDM wire format (IDM.md §2–§6).
//!
//! Everything here is pure: encoders write into caller buffers, decoders never
//! panic on arbitrary input and return a typed error instead.

pub mod answer;
pub mod cdb;
pub mod ids;
pub mod nvme;
pub mod record;
pub mod sense;
pub mod types;

pub use answer::{CommandKind, Condition, DriveError};
pub use cdb::{
    inquiry_cdb, mutex_read_cdb, mutex_write_cdb, parse_cdb, table_count_cdb, version_cdb,
    CdbError, ParsedCdb, ReadGroup, GROUP_INQUIRY, GROUP_MUTEX, IDM_OPCODE, INQUIRY_OPCODE,
    VERSION_PAGE, VERSION_PAGE_LEN,
};
pub use ids::{HostId, LockId, Lvb, ParseIdError};
pub use nvme::{NvmeAdminCmd, NVME_IDM_READ, NVME_IDM_WRITE};
pub use record::{
    decode_table_count, decode_version_page, encode_table_count, encode_version_page, DecodeError,
    Record, RECORD_LEN,
};
pub use sense::{ScsiStatus, Sense, SenseBuf, SenseFormat};
pub use types::{Class, ControlByte, Mode, MutexOp, MutexState};
