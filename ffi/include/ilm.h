/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ilm.h: the IDM lock manager client API of libseagate_ilm.so.0, as LVM2's
 * lvmlockd (--enable-lvmlockd-idm) uses it. Written for the idm-engine project;
 * binary compatible with the original interface (x86-64).
 *
 * Every function returns 0 or a negative errno. A handle ("sock") is one
 * lockspace: its own host ID, lease, renewal and fencing action. The library
 * runs the lock engine inside the calling process; there is no daemon.
 *
 * Drives are named by strings. The environment variable IDM_SIM chooses how
 * names are resolved: "mem:N" (N in-process simulated drives sim0..simN-1),
 * "unix:PATH" or "tcp:HOST:PORT" (drives of an `idm sim` server); unset: real
 * devices. IDM_LOG (a file path or "syslog") and IDM_LOG_LEVEL control logging.
 *
 * Pointers must be NULL (an error, -EINVAL) or valid for the documented size;
 * strings are NUL-terminated.
 */
#ifndef LIB_SEAGATE_ILM_H
#define LIB_SEAGATE_ILM_H

#include <stdint.h>
#include <stdio.h>
#include <uuid/uuid.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ILM_DRIVE_MAX_NUM       512

#define IDM_MODE_UNLOCK         0
#define IDM_MODE_EXCLUSIVE      1
#define IDM_MODE_SHAREABLE      2

#define IDM_FAILURE_PATH_LEN    128
#define IDM_FAILURE_ARGS_LEN    128

#define IDM_VALUE_LEN           8

/* 16 bytes identifying this host (from /etc/machine-id), set when the library loads. */
extern uuid_t ilm_uuid;

/* A lock's ID: 32 characters of the VG UUID, then 32 of the LV UUID (or zeros). */
struct idm_lock_id {
	char vg_uuid[32];
	char lv_uuid[32];
};

/* A lock request (4112 bytes). */
struct idm_lock_op {
	uint32_t mode;                      /* IDM_MODE_EXCLUSIVE or IDM_MODE_SHAREABLE */
	uint32_t drive_num;                 /* 1..ILM_DRIVE_MAX_NUM entries of drives */
	char *drives[ILM_DRIVE_MAX_NUM];    /* drive names */
	int timeout;                        /* drive membership countdown (lease), ms;
					       0: 60000; not a wait */
};

/* A new lockspace handle in *sock (cheap; starts the engine on first use). */
int ilm_connect(int *sock);
/* Forgets the lockspace without unlocking: its locks lapse on the drives. */
int ilm_disconnect(int sock);
/* The IDM version of a drive. */
int ilm_version(int sock, char *drive, uint8_t *major, uint8_t *minor);
/* Acquires a lock on a majority of op's drives. -EBUSY if this lockspace already
 * holds the ID or another host holds it (no waiting). The first lock of a
 * lockspace sets its lease from op->timeout. */
int ilm_lock(int sock, struct idm_lock_id *id, struct idm_lock_op *op);
/* Releases a lock by its ID, storing the LVB written since it was taken. */
int ilm_unlock(int sock, struct idm_lock_id *id);
/* Converts a held lock to mode; on failure it keeps its old mode. */
int ilm_convert(int sock, struct idm_lock_id *id, uint32_t mode);
/* Sets the value the unlock stores (lvb_len must be IDM_VALUE_LEN; byte 7 is
 * not kept by the drives and reads back as 0). */
int ilm_write_lvb(int sock, struct idm_lock_id *id, char *lvb, int lvb_len);
/* Reads a held lock's value: the maximum over a majority of its drives, or all
 * ones when a drive was taken from a lapsed holder (metadata changed). */
int ilm_read_lvb(int sock, struct idm_lock_id *id, char *lvb, int lvb_len);
/* The fencing signal, sent to this process when leases are about to lapse
 * (used when no kill path is set). */
int ilm_set_signal(int sock, int signo);
/* The fencing program and its white-space separated arguments (killargs may be
 * NULL); each shorter than IDM_FAILURE_PATH_LEN / IDM_FAILURE_ARGS_LEN. */
int ilm_set_killpath(int sock, char *killpath, char *killargs);
/* Other hosts holding the lock on op's drives, and whether this lockspace's
 * host holds it (1/0); works for locks not held. op's mode and timeout are
 * not used. */
int ilm_get_host_count(int sock, struct idm_lock_id *id,
		       struct idm_lock_op *op, int *count, int *self);
/* The lock's mode on op's drives (IDM_MODE_UNLOCK if nobody holds it). */
int ilm_get_mode(int sock, struct idm_lock_id *id,
		 struct idm_lock_op *op, int *mode);
/* This lockspace's host ID on the drives: 1..32 bytes, zero-padded. Call before
 * the first lock; -EBUSY while locks are held. */
int ilm_set_host_id(int sock, char *id, int id_len);
/* Pauses renewal as if it failed: leases lapse, and fencing fires before. */
int ilm_stop_renew(int sock);
/* Resumes renewal. */
int ilm_start_renew(int sock);
/* Makes percentage (0..100) of this lockspace's drive commands fail with EIO. */
int ilm_inject_fault(int sock, int percentage);

#ifdef __cplusplus
}
#endif

#endif /* LIB_SEAGATE_ILM_H */
