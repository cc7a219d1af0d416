/*
 * idm_engine_wait as the only way to reap: batches of lock and unlock
 * operations, each reaped with a long timeout. A wait must never come back
 * empty before its timeout while operations are still outstanding (regression:
 * an eventfd left readable by a concurrent reap made it return 0 at once).
 */
#include <idm_engine.h>
#include <errno.h>
#include <time.h>
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
		if (round == 0) {
			/* A held lock's validity: in the future, within the 60 s lease. */
			uint64_t until = 0;
			struct timespec ts;
			CHECK_RC(idm_lockspace_valid_until(l, ops[7].lock_id, &until), 0);
			CHECK_RC(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
			uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
			CHECK(until > now);
			CHECK(until <= now + 60ull * 1000000000ull);
			CHECK_RC(idm_lockspace_valid_until(l, ops[7].lock_id, NULL), -EINVAL);
		}
		run(e, l, ops, IDM_OP_UNLOCK);
	}
	{
		uint64_t until = 0;
		CHECK_RC(idm_lockspace_valid_until(l, ops[7].lock_id, &until), -ENOENT);
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
