/*
 * Every ilm.h function and its error paths, in one process on in-process
 * simulated drives (IDM_SIM=mem:3: sim0, sim1, sim2). Two handles with
 * different host IDs play two hosts.
 */
#include <ilm.h>
#include <signal.h>
#include <stdint.h>

#include "check.h"

static char *drive_names[3] = {"sim0", "sim1", "sim2"};

static void mkid(struct idm_lock_id *id, const char *vg, const char *lv)
{
	memset(id, 0, sizeof(*id));
	strncpy(id->vg_uuid, vg, sizeof(id->vg_uuid));
	if (lv)
		strncpy(id->lv_uuid, lv, sizeof(id->lv_uuid));
}

static void mkop(struct idm_lock_op *op, uint32_t mode)
{
	memset(op, 0, sizeof(*op));
	op->mode = mode;
	op->drive_num = 3;
	for (int i = 0; i < 3; i++)
		op->drives[i] = drive_names[i];
	op->timeout = 60000;
}

static int connect_as(const char *host)
{
	int s = -1;
	CHECK_RC(ilm_connect(&s), 0);
	CHECK(s > 0);
	CHECK_RC(ilm_set_host_id(s, (char *)host, (int)strlen(host)), 0);
	return s;
}

int main(void)
{
	struct idm_lock_id id, id2, other;
	struct idm_lock_op op;
	int a, b, c, count = -1, self = -1, mode = -1;
	uint8_t major = 0, minor = 0;
	char lvb[8], lvb_back[8];

	/* The ABI itself. */
	CHECK(sizeof(struct idm_lock_id) == 64);
	CHECK(sizeof(struct idm_lock_op) == 4112);
	CHECK(__builtin_offsetof(struct idm_lock_op, timeout) == 4104);

	/* Connect: NULL is refused, handles are positive and distinct. */
	CHECK_RC(ilm_connect(NULL), -EINVAL);
	a = connect_as("host-a");
	b = connect_as("host-b");
	CHECK(a != b);

	/* ilm_uuid was filled from this host's ID. */
	{
		int nonzero = 0;
		for (int i = 0; i < 16; i++)
			nonzero |= ilm_uuid[i];
		CHECK(nonzero);
	}

	/* Probe: connect + disconnect is cheap and leaves nothing behind. */
	CHECK_RC(ilm_connect(&c), 0);
	CHECK_RC(ilm_disconnect(c), 0);
	CHECK_RC(ilm_disconnect(c), -EBADF);

	/* Version. */
	CHECK_RC(ilm_version(a, "sim0", &major, &minor), 0);
	CHECK(major > 0);
	CHECK_RC(ilm_version(a, "nosuch", &major, &minor), -ENOENT);
	CHECK_RC(ilm_version(a, NULL, &major, &minor), -EINVAL);
	CHECK_RC(ilm_version(a, "sim0", NULL, &minor), -EINVAL);
	CHECK_RC(ilm_version(12345678, "sim0", &major, &minor), -EBADF);

	mkid(&id, "vg0", "lv1");
	mkid(&id2, "vg0", "lv2");
	mkid(&other, "vg0", "never-locked");

	/* Unknown handles, for every function that takes one. */
	mkop(&op, IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_lock(-1, &id, &op), -EBADF);
	CHECK_RC(ilm_lock(999999, &id, &op), -EBADF);
	CHECK_RC(ilm_unlock(999999, &id), -EBADF);
	CHECK_RC(ilm_convert(999999, &id, IDM_MODE_SHAREABLE), -EBADF);
	CHECK_RC(ilm_write_lvb(999999, &id, lvb, 8), -EBADF);
	CHECK_RC(ilm_read_lvb(999999, &id, lvb, 8), -EBADF);
	CHECK_RC(ilm_set_signal(999999, SIGUSR1), -EBADF);
	CHECK_RC(ilm_set_killpath(999999, "/bin/true", NULL), -EBADF);
	CHECK_RC(ilm_get_host_count(999999, &id, &op, &count, &self), -EBADF);
	CHECK_RC(ilm_get_mode(999999, &id, &op, &mode), -EBADF);
	CHECK_RC(ilm_set_host_id(999999, "x", 1), -EBADF);
	CHECK_RC(ilm_stop_renew(999999), -EBADF);
	CHECK_RC(ilm_start_renew(999999), -EBADF);
	CHECK_RC(ilm_inject_fault(999999, 0), -EBADF);
	CHECK_RC(ilm_disconnect(999999), -EBADF);

	/* Bad lock requests. */
	CHECK_RC(ilm_lock(a, NULL, &op), -EINVAL);
	CHECK_RC(ilm_lock(a, &id, NULL), -EINVAL);
	mkop(&op, IDM_MODE_UNLOCK);
	CHECK_RC(ilm_lock(a, &id, &op), -EINVAL);
	mkop(&op, 3);
	CHECK_RC(ilm_lock(a, &id, &op), -EINVAL);
	mkop(&op, IDM_MODE_EXCLUSIVE);
	op.drive_num = 0;
	CHECK_RC(ilm_lock(a, &id, &op), -EINVAL);
	op.drive_num = ILM_DRIVE_MAX_NUM + 1;
	CHECK_RC(ilm_lock(a, &id, &op), -EINVAL);
	mkop(&op, IDM_MODE_EXCLUSIVE);
	op.drives[1] = NULL;
	CHECK_RC(ilm_lock(a, &id, &op), -EINVAL);
	mkop(&op, IDM_MODE_EXCLUSIVE);
	/* A drive that cannot be opened counts as failed: the other two are a
	 * majority and the lock is taken on them. */
	op.drives[2] = "nosuch";
	CHECK_RC(ilm_lock(a, &id, &op), 0);
	CHECK_RC(ilm_unlock(a, &id), 0);
	/* No drive can be opened at all: the open error. */
	op.drives[0] = "nosuch0";
	op.drives[1] = "nosuch1";
	CHECK_RC(ilm_lock(a, &id, &op), -ENOENT);
	mkop(&op, IDM_MODE_EXCLUSIVE);
	op.timeout = -5;
	CHECK_RC(ilm_lock(a, &id, &op), -EINVAL);

	/* Lock EX; the same ID again in the same lockspace is EBUSY; another
	 * host is refused. */
	mkop(&op, IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_lock(a, &id, &op), 0);
	CHECK_RC(ilm_lock(a, &id, &op), -EBUSY);
	CHECK_RC(ilm_lock(b, &id, &op), -EBUSY);
	mkop(&op, IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_lock(b, &id, &op), -EBUSY);

	/* Mode and host count, from the holder and from another host (which does
	 * not hold it: op's drive list is used). */
	mkop(&op, IDM_MODE_UNLOCK);
	CHECK_RC(ilm_get_mode(b, &id, &op, &mode), 0);
	CHECK(mode == IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_get_host_count(b, &id, &op, &count, &self), 0);
	CHECK(count == 1 && self == 0);
	CHECK_RC(ilm_get_host_count(a, &id, &op, &count, &self), 0);
	CHECK(count == 0 && self == 1);
	CHECK_RC(ilm_get_mode(b, NULL, &op, &mode), -EINVAL);
	CHECK_RC(ilm_get_mode(b, &id, NULL, &mode), -EINVAL);
	CHECK_RC(ilm_get_mode(b, &id, &op, NULL), -EINVAL);
	CHECK_RC(ilm_get_host_count(b, &id, &op, NULL, &self), -EINVAL);
	CHECK_RC(ilm_get_host_count(b, &id, &op, &count, NULL), -EINVAL);
	op.drive_num = 0;
	CHECK_RC(ilm_get_host_count(b, &id, &op, &count, &self), -EINVAL);
	CHECK_RC(ilm_get_mode(b, &id, &op, &mode), -EINVAL);

	/* The host ID cannot change while locks are held. */
	CHECK_RC(ilm_set_host_id(a, "host-z", 6), -EBUSY);
	CHECK_RC(ilm_set_host_id(a, "host-a", 6), 0);
	CHECK_RC(ilm_set_host_id(b, NULL, 4), -EINVAL);
	CHECK_RC(ilm_set_host_id(b, "x", 0), -EINVAL);
	CHECK_RC(ilm_set_host_id(b, "0123456789012345678901234567890123", 33), -EINVAL);

	/* LVB: written by a, stored with the unlock, read by b. Byte 7 is not
	 * kept by the drives. */
	memcpy(lvb, "\x11\x22\x33\x44\x55\x66\x77\x00", 8);
	CHECK_RC(ilm_write_lvb(a, &id, lvb, 4), -EINVAL);
	CHECK_RC(ilm_write_lvb(a, &id, lvb, 16), -EINVAL);
	CHECK_RC(ilm_write_lvb(a, &id, NULL, 8), -EINVAL);
	CHECK_RC(ilm_write_lvb(a, NULL, lvb, 8), -EINVAL);
	CHECK_RC(ilm_write_lvb(a, &other, lvb, 8), -ENOENT);
	CHECK_RC(ilm_write_lvb(a, &id, lvb, 8), 0);
	CHECK_RC(ilm_unlock(a, &id), 0);
	CHECK_RC(ilm_unlock(a, &id), -ENOENT);
	CHECK_RC(ilm_unlock(a, NULL), -EINVAL);

	mkop(&op, IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_lock(b, &id, &op), 0);
	CHECK_RC(ilm_read_lvb(b, &id, lvb_back, 7), -EINVAL);
	CHECK_RC(ilm_read_lvb(b, &id, NULL, 8), -EINVAL);
	CHECK_RC(ilm_read_lvb(b, &other, lvb_back, 8), -ENOENT);
	CHECK_RC(ilm_read_lvb(b, &id, lvb_back, 8), 0);
	CHECK(memcmp(lvb, lvb_back, 8) == 0);

	/* Shared with two hosts; conversion up is refused while the other holds
	 * it, and the lock keeps its mode. */
	CHECK_RC(ilm_lock(a, &id, &op), 0);
	CHECK_RC(ilm_get_host_count(b, &id, &op, &count, &self), 0);
	CHECK(count == 1 && self == 1);
	CHECK(ilm_convert(b, &id, IDM_MODE_EXCLUSIVE) < 0);
	CHECK_RC(ilm_get_mode(a, &id, &op, &mode), 0);
	CHECK(mode == IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_unlock(a, &id), 0);
	CHECK_RC(ilm_convert(b, &id, 0), -EINVAL);
	CHECK_RC(ilm_convert(b, &id, 7), -EINVAL);
	CHECK_RC(ilm_convert(b, NULL, IDM_MODE_EXCLUSIVE), -EINVAL);
	CHECK_RC(ilm_convert(b, &other, IDM_MODE_EXCLUSIVE), -ENOENT);
	CHECK_RC(ilm_convert(b, &id, IDM_MODE_EXCLUSIVE), 0);
	CHECK_RC(ilm_get_mode(a, &id, &op, &mode), 0);
	CHECK(mode == IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_convert(b, &id, IDM_MODE_SHAREABLE), 0);
	CHECK_RC(ilm_get_mode(a, &id, &op, &mode), 0);
	CHECK(mode == IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_unlock(b, &id), 0);

	/* Fencing settings. */
	CHECK_RC(ilm_set_signal(a, 0), -EINVAL);
	CHECK_RC(ilm_set_signal(a, 65), -EINVAL);
	CHECK_RC(ilm_set_signal(a, SIGUSR2), 0);
	CHECK_RC(ilm_set_killpath(a, NULL, NULL), -EINVAL);
	CHECK_RC(ilm_set_killpath(a, "", NULL), -EINVAL);
	{
		char longpath[200];
		memset(longpath, 'x', sizeof(longpath) - 1);
		longpath[0] = '/';
		longpath[sizeof(longpath) - 1] = 0;
		CHECK_RC(ilm_set_killpath(a, longpath, NULL), -E2BIG);
		CHECK_RC(ilm_set_killpath(a, "/bin/true", longpath), -E2BIG);
	}
	CHECK_RC(ilm_set_killpath(a, "/usr/sbin/lvmlockctl", "--kill vg0"), 0);
	CHECK_RC(ilm_set_killpath(a, "/bin/true", NULL), 0);

	/* Renewal switches. */
	CHECK_RC(ilm_stop_renew(a), 0);
	CHECK_RC(ilm_start_renew(a), 0);

	/* Injected faults: every drive command fails with EIO. */
	c = connect_as("host-c");
	CHECK_RC(ilm_inject_fault(c, -1), -EINVAL);
	CHECK_RC(ilm_inject_fault(c, 101), -EINVAL);
	CHECK_RC(ilm_inject_fault(c, 100), 0);
	mkop(&op, IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_lock(c, &id2, &op), -EIO);
	CHECK_RC(ilm_inject_fault(c, 0), 0);
	CHECK_RC(ilm_lock(c, &id2, &op), 0);
	CHECK_RC(ilm_unlock(c, &id2), 0);

	/* Disconnect does not unlock: the lock stays on the drives. */
	CHECK_RC(ilm_lock(c, &id2, &op), 0);
	CHECK_RC(ilm_disconnect(c), 0);
	CHECK_RC(ilm_lock(b, &id2, &op), -EBUSY);
	CHECK_RC(ilm_get_host_count(b, &id2, &op, &count, &self), 0);
	CHECK(count == 1 && self == 0);

	/* A later lockspace with the same host ID takes its own lock back. */
	c = connect_as("host-c");
	CHECK_RC(ilm_lock(c, &id2, &op), 0);
	CHECK_RC(ilm_unlock(c, &id2), 0);
	CHECK_RC(ilm_lock(b, &id2, &op), 0);
	CHECK_RC(ilm_unlock(b, &id2), 0);

	CHECK_RC(ilm_disconnect(a), 0);
	CHECK_RC(ilm_disconnect(b), 0);
	CHECK_RC(ilm_disconnect(c), 0);
	DONE();
}
