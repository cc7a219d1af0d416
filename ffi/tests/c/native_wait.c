/*
 * idm_engine_wait as the only way to reap: batches of lock and unlock
 * operations, each reaped with a long timeout. A wait must never come back
 * empty before its timeout while operations are still outstanding (regression:
 * an eventfd left readable by a concurrent reap made it return 0 at once).
 */
#include <idm_engine.h>
#include <unistd.h>

#include "check.h"

#define N 2000

static const char *drives[3] = {"sim0", "sim1", "sim2"};

static void run(struct idm_engine *e, struct idm_lockspace *l, struct idm_op *ops, uint32_t kind)
{
	static struct idm_completion buf[256];
	for (int i = 0; i < N; i++)
		ops[i].kind = kind;
	CHECK_RC(idm_submit(l, ops, N), N);
	for (int got = 0; got < N;) {
		long r = idm_engine_wait(e, buf, 256, 30000);
		CHECK(r > 0);
		for (long i = 0; i < r; i++)
			CHECK_RC(buf[i].result, 0);
		got += (int)r;
	}
}

int main(void)
{
	static struct idm_op ops[N];
	struct idm_engine_config ecfg;
	struct idm_lockspace_config lcfg;
	struct idm_engine *e;
	struct idm_lockspace *l;

	alarm(120);
	memset(&ecfg, 0, sizeof(ecfg));
	CHECK_RC(idm_engine_new(&ecfg, &e), 0);
	memset(&lcfg, 0, sizeof(lcfg));
	lcfg.name = "native-wait";
	CHECK_RC(idm_lockspace_open(e, &lcfg, &l), 0);
	for (int i = 0; i < N; i++) {
		memset(&ops[i], 0, sizeof(ops[i]));
		ops[i].tag = (uint64_t)i;
		ops[i].mode = IDM_OP_MODE_EXCLUSIVE;
		ops[i].drives = drives;
		ops[i].drive_num = 3;
		snprintf((char *)ops[i].lock_id, sizeof(ops[i].lock_id), "native-wait-%d", i);
	}
	for (int round = 0; round < 5; round++) {
		run(e, l, ops, IDM_OP_LOCK);
		run(e, l, ops, IDM_OP_UNLOCK);
	}
	/* Nothing outstanding: a short wait times out with 0. */
	{
		struct idm_completion one;
		CHECK_RC(idm_engine_wait(e, &one, 1, 10), 0);
	}
	CHECK_RC(idm_lockspace_close(l, 1), 0);
	idm_engine_free(e);
	DONE();
}
