//! The `ilm.h` structs have exactly the layout lvmlockd was compiled against.

use std::mem::{align_of, offset_of, size_of};

use seagate_ilm::abi::{idm_lock_id, idm_lock_op, ILM_DRIVE_MAX_NUM};

#[test]
fn idm_lock_op_is_4112_bytes_with_timeout_at_4104() {
    assert_eq!(size_of::<idm_lock_op>(), 4112);
    assert_eq!(offset_of!(idm_lock_op, mode), 0);
    assert_eq!(offset_of!(idm_lock_op, drive_num), 4);
    assert_eq!(offset_of!(idm_lock_op, drives), 8);
    assert_eq!(offset_of!(idm_lock_op, timeout), 4104);
    assert_eq!(align_of::<idm_lock_op>(), 8);
    assert_eq!(ILM_DRIVE_MAX_NUM, 512);
}

#[test]
fn idm_lock_id_is_64_bytes() {
    assert_eq!(size_of::<idm_lock_id>(), 64);
    assert_eq!(offset_of!(idm_lock_id, lv_uuid), 32);
}

#[test]
fn native_structs_have_stable_sizes() {
    use seagate_ilm::native::{idm_completion, idm_op};
    assert_eq!(size_of::<idm_completion>(), 40);
    assert_eq!(size_of::<idm_op>(), 112);
    assert_eq!(offset_of!(idm_op, drives), 80);
}

#[test]
fn ilm_uuid_is_filled_from_the_host_id() {
    let v = seagate_ilm::ilm::ilm_uuid.get();
    assert_ne!(v, [0u8; 16]);
    assert_eq!(v, seagate_ilm::ilm::host_uuid());
}
