/*
 * The native asynchronous API (idm_engine.h): thousands of operations submitted
 * in one batch, completions reaped through the eventfd with poll(2), every
 * operation kind, invalid operations completing with their error, statistics,
 * and an engine delivering completions to a callback. Drives come from IDM_SIM
 * (sim0..sim2).
 */
#include <idm_engine.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "check.h"

#define N 3000

static const char *drives[3] = {"sim0", "sim1", "sim2"};
static const char *bad_drives[2] = {"sim0", NULL};
static const char *unknown_drives[1] = {"nosuch"};

static void set_id(struct idm_op *op, int i)
{
	memset(op->lock_id, 0, sizeof(op->lock_id));
	snprintf((char *)op->lock_id, sizeof(op->lock_id), "native-lock-%d", i);
}

static struct idm_op mkop(uint64_t tag, uint32_t kind, int i)
{
	struct idm_op op;
	memset(&op, 0, sizeof(op));
	op.tag = tag;
	op.kind = kind;
	op.mode = IDM_OP_MODE_EXCLUSIVE;
	op.drives = drives;
	op.drive_num = 3;
	set_id(&op, i);
	return op;
}

/* Reaps until `n` completions arrived (poll on the eventfd), into `out` by tag. */
static void reap_all(struct idm_engine *e, struct idm_completion *by_tag, size_t n, uint64_t base)
{
	static unsigned char seen[N + 64];
	struct idm_completion buf[256];
	int fd = idm_engine_eventfd(e);
	size_t got = 0;

	CHECK(fd >= 0);
	memset(seen, 0, sizeof(seen));
	while (got < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK(poll(&p, 1, 30000) == 1);
		long r = idm_engine_reap(e, buf, 256);
		CHECK(r >= 0);
		for (long i = 0; i < r; i++) {
			uint64_t t = buf[i].tag - base;
			CHECK(buf[i].tag >= base && t < n);
			CHECK(!seen[t]);
			seen[t] = 1;
			by_tag[t] = buf[i];
		}
		got += (size_t)r;
	}
	/* Nothing else is queued. */
	CHECK(idm_engine_reap(e, buf, 256) == 0);
}

static atomic_int cb_count;
static pthread_mutex_t cb_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_cv = PTHREAD_COND_INITIALIZER;
static atomic_int cb_errors;

static void on_done(const struct idm_completion *c, void *arg)
{
	CHECK(arg == (void *)&cb_count);
	if (c->result != 0)
		atomic_fetch_add(&cb_errors, 1);
	pthread_mutex_lock(&cb_mu);
	atomic_fetch_add(&cb_count, 1);
	pthread_cond_broadcast(&cb_cv);
	pthread_mutex_unlock(&cb_mu);
}

int main(void)
{
	static struct idm_op ops[N];
	static struct idm_completion res[N];
	struct idm_engine_config ecfg;
	struct idm_lockspace_config lcfg;
	struct idm_engine *e = NULL, *ecb = NULL;
	struct idm_lockspace *a = NULL, *b = NULL, *c = NULL;
	struct idm_stats st;
	struct idm_completion one[4];

	alarm(300);
	/* Argument checks. */
	CHECK_RC(idm_engine_new(NULL, NULL), -EINVAL);
	memset(&ecfg, 0, sizeof(ecfg));
	ecfg.drives = "mem:0";
	CHECK_RC(idm_engine_new(&ecfg, &e), -EINVAL);
	CHECK_RC(idm_engine_eventfd(NULL), -EINVAL);
	CHECK_RC(idm_submit(NULL, ops, 1), -EINVAL);

	/* Drives from IDM_SIM. */
	memset(&ecfg, 0, sizeof(ecfg));
	ecfg.reactors = 2;
	CHECK_RC(idm_engine_new(&ecfg, &e), 0);
	memset(&lcfg, 0, sizeof(lcfg));
	lcfg.name = "native-a";
	lcfg.host_id = (const uint8_t *)"native-host-a";
	lcfg.host_id_len = 13;
	CHECK_RC(idm_lockspace_open(e, &lcfg, &a), 0);
	lcfg.name = "native-b";
	lcfg.host_id = (const uint8_t *)"native-host-b";
	CHECK_RC(idm_lockspace_open(e, &lcfg, &b), 0);
	lcfg.host_id_len = 40;
	CHECK_RC(idm_lockspace_open(e, &lcfg, &c), -EINVAL);
	lcfg.host_id_len = 13;
	lcfg.lease_ms = 10;
	CHECK_RC(idm_lockspace_open(e, &lcfg, &c), -EINVAL);
	CHECK_RC(idm_submit(a, NULL, 1), -EINVAL);
	CHECK_RC(idm_submit(a, ops, 0), 0);

	/* N exclusive locks in one batch. */
	for (int i = 0; i < N; i++)
		ops[i] = mkop((uint64_t)i, IDM_OP_LOCK, i);
	CHECK_RC(idm_submit(a, ops, N), N);
	reap_all(e, res, N, 0);
	for (int i = 0; i < N; i++) {
		CHECK(res[i].kind == IDM_OP_LOCK);
		CHECK_RC(res[i].result, 0);
	}

	/* Another host: busy, counted, mode seen; and the LVB of every lock. */
	for (int i = 0; i < N; i++) {
		ops[i] = mkop(100000 + (uint64_t)i, IDM_OP_WRITE_LVB, i);
		memcpy(ops[i].lvb, &i, sizeof(i));
	}
	CHECK_RC(idm_submit(a, ops, N), N);
	reap_all(e, res, N, 100000);
	for (int i = 0; i < N; i++)
		CHECK_RC(res[i].result, 0);

	{
		struct idm_op q[10];
		q[0] = mkop(0, IDM_OP_LOCK, 7);                 /* busy */
		q[1] = mkop(1, IDM_OP_HOST_COUNT, 7);
		q[2] = mkop(2, IDM_OP_MODE, 7);
		q[3] = mkop(3, 99, 7);                          /* bad kind */
		q[4] = mkop(4, IDM_OP_LOCK, 7);
		q[4].mode = 0;                                  /* bad mode */
		q[5] = mkop(5, IDM_OP_LOCK, 7);
		q[5].drive_num = 0;                             /* no drives */
		q[6] = mkop(6, IDM_OP_LOCK, 7);
		q[6].drives = bad_drives;                       /* NULL entry */
		q[6].drive_num = 2;
		q[7] = mkop(7, IDM_OP_LOCK, N + 7); /* a lock no op of this batch uses */
		q[7].drives = unknown_drives;                   /* unknown drive */
		q[7].drive_num = 1;
		q[8] = mkop(8, IDM_OP_UNLOCK, 7);               /* not held by b */
		q[9] = mkop(9, IDM_OP_READ_LVB, 7);             /* not held by b */
		CHECK_RC(idm_submit(b, q, 10), 10);
		reap_all(e, res, 10, 0);
		CHECK_RC(res[0].result, -EBUSY);
		CHECK_RC(res[1].result, 0);
		CHECK(res[1].count == 1 && res[1].self_held == 0);
		CHECK_RC(res[2].result, 0);
		CHECK(res[2].mode == IDM_OP_MODE_EXCLUSIVE);
		CHECK_RC(res[3].result, -EINVAL);
		CHECK_RC(res[4].result, -EINVAL);
		CHECK_RC(res[5].result, -EINVAL);
		CHECK_RC(res[6].result, -EINVAL);
		CHECK_RC(res[7].result, -ENOENT);
		CHECK_RC(res[8].result, -ENOENT);
		CHECK_RC(res[9].result, -ENOENT);
		CHECK(res[3].kind == 99);
	}

	/* Convert one down, read it back, then unlock all N in one batch. */
	ops[0] = mkop(0, IDM_OP_CONVERT, 11);
	ops[0].mode = IDM_OP_MODE_SHAREABLE;
	CHECK_RC(idm_submit(a, ops, 1), 1);
	CHECK(idm_engine_wait(e, one, 4, 30000) == 1);
	CHECK_RC(one[0].result, 0);
	CHECK(one[0].kind == IDM_OP_CONVERT);
	ops[0] = mkop(1, IDM_OP_MODE, 11);
	CHECK_RC(idm_submit(b, ops, 1), 1);
	CHECK(idm_engine_wait(e, one, 4, 30000) == 1);
	CHECK(one[0].mode == IDM_OP_MODE_SHAREABLE);

	for (int i = 0; i < N; i++)
		ops[i] = mkop(200000 + (uint64_t)i, IDM_OP_UNLOCK, i);
	CHECK_RC(idm_submit(a, ops, N), N);
	reap_all(e, res, N, 200000);
	for (int i = 0; i < N; i++)
		CHECK_RC(res[i].result, 0);
	CHECK(idm_engine_wait(e, one, 4, 0) == 0);

	/* B takes one and reads the LVB A stored with its unlock. */
	ops[0] = mkop(5, IDM_OP_LOCK, 1234);
	ops[0].flags = IDM_OP_FLAG_WAIT;
	ops[1] = mkop(6, IDM_OP_READ_LVB, 1234);
	CHECK_RC(idm_submit(b, ops, 1), 1);
	CHECK(idm_engine_wait(e, one, 4, 30000) == 1);
	CHECK_RC(one[0].result, 0);
	CHECK_RC(idm_submit(b, ops + 1, 1), 1);
	CHECK(idm_engine_wait(e, one, 4, 30000) == 1);
	CHECK_RC(one[0].result, 0);
	{
		int v = 0;
		memcpy(&v, one[0].lvb, sizeof(v));
		CHECK(v == 1234);
	}

	/* Injected faults fail lock commands with EIO. */
	CHECK_RC(idm_lockspace_inject_fault(b, 101), -EINVAL);
	CHECK_RC(idm_lockspace_inject_fault(b, 100), 0);
	ops[0] = mkop(7, IDM_OP_LOCK, 4321);
	CHECK_RC(idm_submit(b, ops, 1), 1);
	CHECK(idm_engine_wait(e, one, 4, 30000) == 1);
	CHECK_RC(one[0].result, -EIO);
	CHECK_RC(idm_lockspace_inject_fault(b, 0), 0);

	CHECK_RC(idm_engine_stats(e, &st), 0);
	CHECK_RC(idm_engine_stats(e, NULL), -EINVAL);
	CHECK(st.reactors == 2);
	CHECK(st.submitted == st.completed);
	CHECK(st.queued == 0);
	CHECK(st.lock.count >= N);
	CHECK(st.unlock.count >= N);
	CHECK(st.commands >= 3 * 2 * N);
	printf("stats: submitted %llu, lock p50 %llu ns, p99 %llu ns, commands %llu\n",
	       (unsigned long long)st.submitted, (unsigned long long)st.lock.p50_ns,
	       (unsigned long long)st.lock.p99_ns, (unsigned long long)st.commands);

	CHECK_RC(idm_lockspace_close(a, 1), 0);
	CHECK_RC(idm_lockspace_close(b, 1), 0);
	CHECK_RC(idm_lockspace_close(NULL, 1), -EINVAL);
	idm_engine_free(e);

	/* An engine with a callback: completions arrive there, not on an eventfd. */
	memset(&ecfg, 0, sizeof(ecfg));
	ecfg.drives = "mem:3";
	ecfg.callback = on_done;
	ecfg.callback_arg = &cb_count;
	CHECK_RC(idm_engine_new(&ecfg, &ecb), 0);
	CHECK_RC(idm_engine_eventfd(ecb), -EINVAL);
	CHECK_RC(idm_lockspace_open(ecb, NULL, &c), 0);
	for (int i = 0; i < N; i++)
		ops[i] = mkop((uint64_t)i, IDM_OP_LOCK, i);
	CHECK_RC(idm_submit(c, ops, N), N);
	pthread_mutex_lock(&cb_mu);
	while (atomic_load(&cb_count) < N)
		pthread_cond_wait(&cb_cv, &cb_mu);
	pthread_mutex_unlock(&cb_mu);
	for (int i = 0; i < N; i++)
		ops[i] = mkop((uint64_t)i, IDM_OP_UNLOCK, i);
	CHECK_RC(idm_submit(c, ops, N), N);
	pthread_mutex_lock(&cb_mu);
	while (atomic_load(&cb_count) < 2 * N)
		pthread_cond_wait(&cb_cv, &cb_mu);
	pthread_mutex_unlock(&cb_mu);
	CHECK(atomic_load(&cb_errors) == 0);
	CHECK_RC(idm_lockspace_close(c, 0), 0);
	idm_engine_free(ecb);
	DONE();
}
