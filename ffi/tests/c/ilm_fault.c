/*
 * Host-wide fault injection (LVM2's idm_ilm_failure tests inject from a helper
 * process and expect lvmlockd's drive I/O to fail). Run by tests/c_clients.rs
 * against a simulator server, each mode in its own process:
 *
 *   ilm_fault set PCT     ilm_inject_fault(PCT) on a handle that holds nothing
 *   ilm_fault lock WANT   ilm_lock on sim0..sim2 returns WANT (0 or -errno);
 *                         on 0 it unlocks again
 */
#include <ilm.h>

#include "check.h"

static char *drive_names[3] = {"sim0", "sim1", "sim2"};

int main(int argc, char **argv)
{
	struct idm_lock_id id;
	struct idm_lock_op op;
	int s;

	CHECK(argc == 3);
	CHECK_RC(ilm_connect(&s), 0);
	if (!strcmp(argv[1], "set")) {
		CHECK_RC(ilm_inject_fault(s, atoi(argv[2])), 0);
		CHECK_RC(ilm_disconnect(s), 0);
		DONE();
	}
	CHECK(!strcmp(argv[1], "lock"));
	memset(&id, 0, sizeof(id));
	memcpy(id.vg_uuid, "fault-vg", 8);
	memset(&op, 0, sizeof(op));
	op.mode = IDM_MODE_EXCLUSIVE;
	op.drive_num = 3;
	for (int i = 0; i < 3; i++)
		op.drives[i] = drive_names[i];
	op.timeout = 60000;
	CHECK_RC(ilm_lock(s, &id, &op), atoi(argv[2]));
	if (atoi(argv[2]) == 0)
		CHECK_RC(ilm_unlock(s, &id), 0);
	CHECK_RC(ilm_disconnect(s), 0);
	DONE();
}
