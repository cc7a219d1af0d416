/*
 * Two hosts contending for one lock, and an LVB handed from one to the other.
 *
 *   ilm_contend fork     two processes (needs IDM_SIM=unix:... or tcp:...: both
 *                        must see the same drives)
 *   ilm_contend thread   two threads of one process, two handles (any IDM_SIM)
 *
 * Host A and host B step through a script synchronised by pipes, then both
 * hammer one exclusive lock; a counter in shared memory checks that never more
 * than one of them is inside.
 */
#include <ilm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define ROUNDS 40

static char *drive_names[3] = {"sim0", "sim1", "sim2"};

struct shared {
	atomic_int inside;
	atomic_int max_inside;
	atomic_int entries[2];
};

static struct shared *sh;
static int a_to_b[2], b_to_a[2];

static void mkid(struct idm_lock_id *id, const char *lv)
{
	memset(id, 0, sizeof(*id));
	memcpy(id->vg_uuid, "contend-vg", 10);
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

static void say(int fd, char c)
{
	CHECK(write(fd, &c, 1) == 1);
}

static void expect(int fd, char want)
{
	char c = 0;
	CHECK(read(fd, &c, 1) == 1);
	CHECK(c == want);
}

static void pause_briefly(void)
{
	struct timespec ts = {0, 200000}; /* back off 0.2 ms between tries */
	nanosleep(&ts, NULL);
}

/* Both hosts: take the hot lock ROUNDS times, checking exclusion. */
static void hammer(int s, int who)
{
	struct idm_lock_id hot;
	struct idm_lock_op op;
	int got = 0, rc;

	mkid(&hot, "hot");
	mkop(&op, IDM_MODE_EXCLUSIVE);
	while (got < ROUNDS) {
		rc = ilm_lock(s, &hot, &op);
		if (rc == -EBUSY) {
			pause_briefly();
			continue;
		}
		CHECK_RC(rc, 0);
		int now = atomic_fetch_add(&sh->inside, 1) + 1;
		int prev = atomic_load(&sh->max_inside);
		while (now > prev && !atomic_compare_exchange_weak(&sh->max_inside, &prev, now))
			;
		atomic_fetch_add(&sh->entries[who], 1);
		sched_yield();
		atomic_fetch_sub(&sh->inside, 1);
		CHECK_RC(ilm_unlock(s, &hot), 0);
		got++;
	}
}

static void host_a(void)
{
	struct idm_lock_id x;
	struct idm_lock_op op;
	char v1[8] = {1, 2, 3, 4, 5, 6, 7, 0}, back[8];
	int s;

	CHECK_RC(ilm_connect(&s), 0);
	CHECK_RC(ilm_set_host_id(s, "contend-host-a", 14), 0);
	mkid(&x, "x");

	mkop(&op, IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_lock(s, &x, &op), 0);
	CHECK_RC(ilm_write_lvb(s, &x, v1, 8), 0);
	say(a_to_b[1], '1');            /* A holds X */
	expect(b_to_a[0], '2');         /* B saw it busy */
	CHECK_RC(ilm_unlock(s, &x), 0);
	say(a_to_b[1], '3');            /* A released X with v1 */
	expect(b_to_a[0], '4');         /* B took X, read v1, stored v2 */

	mkop(&op, IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_lock(s, &x, &op), 0);
	CHECK_RC(ilm_read_lvb(s, &x, back, 8), 0);
	CHECK(memcmp(back, "\x09\x08\x07\x06\x05\x04\x03\x00", 8) == 0);
	say(a_to_b[1], '5');            /* A holds X shared */
	expect(b_to_a[0], '6');         /* B holds it shared too */
	CHECK_RC(ilm_unlock(s, &x), 0);
	say(a_to_b[1], '7');

	hammer(s, 0);
	say(a_to_b[1], '8');
	expect(b_to_a[0], '9');
	CHECK_RC(ilm_disconnect(s), 0);
}

static void host_b(void)
{
	struct idm_lock_id x;
	struct idm_lock_op op;
	char v1[8] = {1, 2, 3, 4, 5, 6, 7, 0}, v2[8] = {9, 8, 7, 6, 5, 4, 3, 0}, back[8];
	int s, count = -1, self = -1, mode = -1;

	CHECK_RC(ilm_connect(&s), 0);
	CHECK_RC(ilm_set_host_id(s, "contend-host-b", 14), 0);
	mkid(&x, "x");

	expect(a_to_b[0], '1');
	mkop(&op, IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_lock(s, &x, &op), -EBUSY);
	mkop(&op, IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_lock(s, &x, &op), -EBUSY);
	CHECK_RC(ilm_get_host_count(s, &x, &op, &count, &self), 0);
	CHECK(count == 1 && self == 0);
	CHECK_RC(ilm_get_mode(s, &x, &op, &mode), 0);
	CHECK(mode == IDM_MODE_EXCLUSIVE);
	say(b_to_a[1], '2');

	expect(a_to_b[0], '3');
	mkop(&op, IDM_MODE_EXCLUSIVE);
	CHECK_RC(ilm_lock(s, &x, &op), 0);
	CHECK_RC(ilm_read_lvb(s, &x, back, 8), 0);
	CHECK(memcmp(back, v1, 8) == 0);
	CHECK_RC(ilm_write_lvb(s, &x, v2, 8), 0);
	CHECK_RC(ilm_unlock(s, &x), 0);
	say(b_to_a[1], '4');

	expect(a_to_b[0], '5');
	mkop(&op, IDM_MODE_SHAREABLE);
	CHECK_RC(ilm_lock(s, &x, &op), 0);
	CHECK_RC(ilm_get_host_count(s, &x, &op, &count, &self), 0);
	CHECK(count == 1 && self == 1);
	say(b_to_a[1], '6');
	expect(a_to_b[0], '7');
	CHECK_RC(ilm_unlock(s, &x), 0);

	hammer(s, 1);
	expect(a_to_b[0], '8');
	say(b_to_a[1], '9');
	CHECK_RC(ilm_disconnect(s), 0);
}

static void *thread_b(void *arg)
{
	(void)arg;
	host_b();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[1], "fork") && strcmp(argv[1], "thread"))) {
		fprintf(stderr, "usage: %s fork|thread\n", argv[0]);
		return 2;
	}
	alarm(120); /* a hang fails the test instead of blocking it */
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED);
	CHECK(pipe(a_to_b) == 0 && pipe(b_to_a) == 0);

	if (!strcmp(argv[1], "fork")) {
		/* Fork before either side touches the library: each process has its
		 * own engine, and they meet only on the simulator's drives. */
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			close(a_to_b[1]);
			close(b_to_a[0]);
			host_b();
			_exit(0);
		}
		/* A peer that dies closes its pipe ends: reads then fail at once. */
		close(a_to_b[0]);
		close(b_to_a[1]);
		host_a();
		int status = 0;
		CHECK(waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	} else {
		pthread_t t;
		CHECK(pthread_create(&t, NULL, thread_b, NULL) == 0);
		host_a();
		CHECK(pthread_join(t, NULL) == 0);
	}
	CHECK(atomic_load(&sh->max_inside) == 1);
	CHECK(atomic_load(&sh->entries[0]) == ROUNDS);
	CHECK(atomic_load(&sh->entries[1]) == ROUNDS);
	DONE();
}
