/*
 * Benchmark of the C ABI as a C program sees it (built against the installed
 * library with pkg-config, see scripts/bench-ffi.sh):
 *
 *   ilm:    lock+unlock latency through ilm.h (ilm_lock, ilm_unlock), one at a
 *           time, on the drives IDM_SIM names (mem:N: N in-process drives);
 *   native: throughput of idm_engine.h with BATCH locks in flight: submit BATCH
 *           lock ops in one call, reap them, submit BATCH unlocks, reap them.
 *
 * Prints one line per measurement; no assertion on times.
 */
#include <errno.h>
#include <ilm.h>
#include <idm_engine.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uuid_t ilm_uuid_unused;

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int bench_ilm(int drives, int iters)
{
	static struct idm_lock_op op;
	struct idm_lock_id id;
	char names[512][16];
	double *lat = calloc((size_t)iters, sizeof(double));
	int sock, rc;

	memset(&op, 0, sizeof(op));
	op.mode = IDM_MODE_EXCLUSIVE;
	op.drive_num = (uint32_t)drives;
	op.timeout = 60000;
	for (int i = 0; i < drives; i++) {
		snprintf(names[i], sizeof(names[i]), "sim%d", i);
		op.drives[i] = names[i];
	}
	if ((rc = ilm_connect(&sock)) != 0) {
		fprintf(stderr, "ilm_connect: %d\n", rc);
		return 1;
	}
	memset(&id, 0, sizeof(id));
	for (int i = 0; i < iters + 200; i++) {
		snprintf(id.vg_uuid, sizeof(id.vg_uuid), "bench-vg");
		snprintf(id.lv_uuid, sizeof(id.lv_uuid), "lv-%d", i % 64);
		double t = now_us();
		if ((rc = ilm_lock(sock, &id, &op)) != 0 || (rc = ilm_unlock(sock, &id)) != 0) {
			fprintf(stderr, "lock/unlock: %d\n", rc);
			return 1;
		}
		if (i >= 200) /* the first 200 warm up the drives and the engine */
			lat[i - 200] = now_us() - t;
	}
	ilm_disconnect(sock);
	qsort(lat, (size_t)iters, sizeof(double), cmp);
	printf("ilm.h lock+unlock, %d drive(s), %d iterations: p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n",
	       drives, iters, lat[iters / 2], lat[iters * 99 / 100], lat[iters * 999 / 1000]);
	free(lat);
	return 0;
}

static int run_batch(struct idm_engine *e, struct idm_lockspace *l, struct idm_op *ops, int n,
		     uint32_t kind, struct idm_completion *buf)
{
	for (int i = 0; i < n; i++)
		ops[i].kind = kind;
	long sub = idm_submit(l, ops, (size_t)n);
	if (sub != n) {
		fprintf(stderr, "idm_submit: %ld of %d\n", sub, n);
		return -1;
	}
	for (int got = 0; got < n;) {
		long r = idm_engine_wait(e, buf, 1024, 30000);
		if (r <= 0) {
			fprintf(stderr, "idm_engine_wait: %ld after %d of %d\n", r, got, n);
			return -1;
		}
		for (long i = 0; i < r; i++)
			if (buf[i].result != 0) {
				fprintf(stderr, "op %llu (kind %u): %d\n", (unsigned long long)buf[i].tag,
					buf[i].kind, buf[i].result);
				return buf[i].result;
			}
		got += (int)r;
	}
	return 0;
}

static int bench_native(int drives, int batch, int rounds)
{
	struct idm_engine_config ecfg;
	struct idm_lockspace_config lcfg;
	struct idm_engine *e;
	struct idm_lockspace *l;
	static const char *names[512];
	static char store[512][16];
	struct idm_op *ops = calloc((size_t)batch, sizeof(struct idm_op));
	struct idm_completion *buf = calloc(1024, sizeof(struct idm_completion));
	int rc;

	for (int i = 0; i < drives; i++) {
		snprintf(store[i], sizeof(store[i]), "sim%d", i);
		names[i] = store[i];
	}
	memset(&ecfg, 0, sizeof(ecfg));
	if ((rc = idm_engine_new(&ecfg, &e)) != 0) {
		fprintf(stderr, "idm_engine_new: %d\n", rc);
		return 1;
	}
	memset(&lcfg, 0, sizeof(lcfg));
	lcfg.name = "bench";
	if ((rc = idm_lockspace_open(e, &lcfg, &l)) != 0) {
		fprintf(stderr, "idm_lockspace_open: %d\n", rc);
		return 1;
	}
	for (int i = 0; i < batch; i++) {
		ops[i].tag = (uint64_t)i;
		ops[i].mode = IDM_OP_MODE_EXCLUSIVE;
		ops[i].drives = names;
		ops[i].drive_num = (uint32_t)drives;
		snprintf((char *)ops[i].lock_id, sizeof(ops[i].lock_id), "native-bench-%d", i);
	}
	/* Warm-up round. */
	if ((rc = run_batch(e, l, ops, batch, IDM_OP_LOCK, buf)) != 0 ||
	    (rc = run_batch(e, l, ops, batch, IDM_OP_UNLOCK, buf)) != 0) {
		fprintf(stderr, "batch: %d\n", rc);
		return 1;
	}
	double t = now_us();
	for (int r = 0; r < rounds; r++) {
		if ((rc = run_batch(e, l, ops, batch, IDM_OP_LOCK, buf)) != 0 ||
		    (rc = run_batch(e, l, ops, batch, IDM_OP_UNLOCK, buf)) != 0) {
			fprintf(stderr, "batch: %d\n", rc);
			return 1;
		}
	}
	double secs = (now_us() - t) / 1e6;
	double cycles = (double)batch * rounds;
	printf("idm_engine.h batches of %d, %d drive(s): %.0f lock+unlock/s, %.0f drive commands/s\n",
	       batch, drives, cycles / secs, cycles * 2 * drives / secs);
	idm_lockspace_close(l, 1);
	idm_engine_free(e);
	free(ops);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int drives = argc > 1 ? atoi(argv[1]) : 3;
	int iters = argc > 2 ? atoi(argv[2]) : 5000;
	int batch = argc > 3 ? atoi(argv[3]) : 3000;
	if (drives < 1 || drives > 512 || iters < 1 || batch < 1) {
		fprintf(stderr, "usage: ilm_bench [drives 1..512] [iterations] [batch]\n");
		return 2;
	}
	if (bench_ilm(drives, iters))
		return 1;
	return bench_native(drives, batch, 5);
}
