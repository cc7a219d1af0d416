/*
 * ilm_lock waits behind a live holder, bounded by IDM_LOCK_WAIT_MS. Two
 * processes on one simulator server (IDM_SIM=unix:... or tcp:...), run by
 * tests/c_clients.rs:
 *
 *   ilm_wait hold        takes X exclusively as host "wait-holder", prints
 *                        "held", releases X when a line arrives on stdin, prints
 *                        "ok: released" and exits
 *   ilm_wait wait WANT   takes X as host "wait-waiter" and checks ilm_lock
 *                        returns WANT (0 or a negative errno); on 0 it releases X
 *
 * The harness decides when the holder lets go (after it saw the waiter's
 * trylocks reach the drives), so nothing here depends on timing.
 */
#include <ilm.h>
#include <unistd.h>

#include "check.h"

static char *drive_names[3] = {"sim0", "sim1", "sim2"};

static void setup(int *s, const char *host, struct idm_lock_id *id, struct idm_lock_op *op)
{
	CHECK_RC(ilm_connect(s), 0);
	CHECK_RC(ilm_set_host_id(*s, (char *)host, (int)strlen(host)), 0);
	memset(id, 0, sizeof(*id));
	memcpy(id->vg_uuid, "wait-vg", 7);
	memset(op, 0, sizeof(*op));
	op->mode = IDM_MODE_EXCLUSIVE;
	op->drive_num = 3;
	for (int i = 0; i < 3; i++)
		op->drives[i] = drive_names[i];
	op->timeout = 60000;
}

int main(int argc, char **argv)
{
	struct idm_lock_id id;
	struct idm_lock_op op;
	char line[16];
	int s;

	if (argc == 2 && !strcmp(argv[1], "hold")) {
		setup(&s, "wait-holder", &id, &op);
		CHECK_RC(ilm_lock(s, &id, &op), 0);
		printf("held\n");
		fflush(stdout);
		CHECK(fgets(line, sizeof(line), stdin) != NULL);
		CHECK_RC(ilm_unlock(s, &id), 0);
		CHECK_RC(ilm_disconnect(s), 0);
		printf("released\n");
		DONE();
	}
	if (argc == 3 && !strcmp(argv[1], "wait")) {
		int want = atoi(argv[2]);
		setup(&s, "wait-waiter", &id, &op);
		CHECK_RC(ilm_lock(s, &id, &op), want);
		if (want == 0)
			CHECK_RC(ilm_unlock(s, &id), 0);
		CHECK_RC(ilm_disconnect(s), 0);
		DONE();
	}
	fprintf(stderr, "usage: %s hold | wait WANT\n", argv[0]);
	return 2;
}
