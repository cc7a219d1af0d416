/*
 * Lease expiry and fencing. A lockspace that stops renewing (ilm_stop_renew)
 * must run its kill path (or send its signal) before its lease lapses; then it
 * refuses new locks, and another host takes the lock once the lease lapsed,
 * reading the LVB as all ones ("metadata changed").
 *
 * The kill path is a shell script in a temporary directory that writes a
 * marker file and then a FIFO this program blocks on (no polling, no sleeps).
 */
#include <fcntl.h>
#include <ilm.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char *drive_names[3] = {"sim0", "sim1", "sim2"};
static int sig_pipe[2];

static void mkid(struct idm_lock_id *id, const char *lv)
{
	memset(id, 0, sizeof(*id));
	memcpy(id->vg_uuid, "fence-vg", 8);
	strncpy(id->lv_uuid, lv, sizeof(id->lv_uuid));
}

static void mkop(struct idm_lock_op *op, uint32_t mode, int lease_ms)
{
	memset(op, 0, sizeof(*op));
	op->mode = mode;
	op->drive_num = 3;
	for (int i = 0; i < 3; i++)
		op->drives[i] = drive_names[i];
	op->timeout = lease_ms;
}

static int connect_as(const char *host)
{
	int s = -1;
	CHECK_RC(ilm_connect(&s), 0);
	CHECK_RC(ilm_set_host_id(s, (char *)host, (int)strlen(host)), 0);
	return s;
}

static void on_signal(int sig)
{
	char c = (char)sig;
	if (write(sig_pipe[1], &c, 1) != 1)
		_exit(3);
}

/* Takes `id` on `s`, retrying while a live holder refuses it. */
static void lock_when_free(int s, struct idm_lock_id *id, struct idm_lock_op *op)
{
	time_t give_up = time(NULL) + 60;
	int rc;
	while ((rc = ilm_lock(s, id, op)) == -EBUSY) {
		CHECK(time(NULL) < give_up);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	CHECK_RC(rc, 0);
}

int main(void)
{
	char dir[] = "/tmp/ilm-fence-XXXXXX";
	char script[48], marker[48], fifo[48], args[IDM_FAILURE_ARGS_LEN], buf[256];
	struct idm_lock_id x, y, z;
	struct idm_lock_op op;
	char lvb[8] = {0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0};
	int a, b, c, fd;
	ssize_t n;

	alarm(120); /* a fence that never comes fails the test instead of hanging it */
	CHECK(mkdtemp(dir) != NULL);
	snprintf(script, sizeof(script), "%s/kill.sh", dir);
	snprintf(marker, sizeof(marker), "%s/marker", dir);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	snprintf(args, sizeof(args), "%s %s", marker, fifo);
	{
		FILE *f = fopen(script, "w");
		CHECK(f != NULL);
		fprintf(f, "#!/bin/sh\necho fenced \"$@\" > \"$1\"\necho done > \"$2\"\n");
		CHECK(fclose(f) == 0);
		CHECK(chmod(script, 0755) == 0);
	}
	CHECK(mkfifo(fifo, 0600) == 0);

	mkid(&x, "x");
	mkid(&y, "y");
	mkid(&z, "z");

	/* Host A holds X on a 1.2 s lease, with the kill path as its fence. */
	a = connect_as("fence-host-a");
	CHECK_RC(ilm_set_killpath(a, script, args), 0);
	mkop(&op, IDM_MODE_EXCLUSIVE, 1200);
	CHECK_RC(ilm_lock(a, &x, &op), 0);
	CHECK_RC(ilm_write_lvb(a, &x, lvb, 8), 0);

	b = connect_as("fence-host-b");
	mkop(&op, IDM_MODE_EXCLUSIVE, 60000);
	CHECK_RC(ilm_lock(b, &x, &op), -EBUSY);

	/* A stops renewing: the kill path runs (blocks until the script writes). */
	CHECK_RC(ilm_stop_renew(a), 0);
	fd = open(fifo, O_RDONLY);
	CHECK(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	CHECK(n > 0);
	close(fd);
	buf[n] = 0;
	CHECK(strcmp(buf, "done\n") == 0);
	fd = open(marker, O_RDONLY);
	CHECK(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	CHECK(n > 0);
	close(fd);
	buf[n] = 0;
	{
		char want[128];
		snprintf(want, sizeof(want), "fenced %s %s\n", marker, fifo);
		CHECK(strcmp(buf, want) == 0);
	}

	/* The fenced lockspace takes no new lock. */
	mkop(&op, IDM_MODE_EXCLUSIVE, 1200);
	CHECK_RC(ilm_lock(a, &y, &op), -ETIME);

	/* B gets X once A's lease lapsed, and sees the LVB invalidated: A's value
	 * was never stored. */
	mkop(&op, IDM_MODE_EXCLUSIVE, 60000);
	lock_when_free(b, &x, &op);
	CHECK_RC(ilm_read_lvb(b, &x, buf, 8), 0);
	CHECK(memcmp(buf, "\xff\xff\xff\xff\xff\xff\xff\xff", 8) == 0);
	CHECK_RC(ilm_unlock(b, &x), 0);
	CHECK_RC(ilm_disconnect(a), 0);

	/* Fencing by signal: host C gets SIGUSR1 when its renewals stop. */
	CHECK(pipe(sig_pipe) == 0);
	{
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	}
	c = connect_as("fence-host-c");
	CHECK_RC(ilm_set_signal(c, SIGUSR1), 0);
	mkop(&op, IDM_MODE_EXCLUSIVE, 1200);
	CHECK_RC(ilm_lock(c, &z, &op), 0);
	CHECK_RC(ilm_stop_renew(c), 0);
	{
		char got = 0;
		while ((n = read(sig_pipe[0], &got, 1)) < 0 && errno == EINTR)
			;
		CHECK(n == 1 && got == SIGUSR1);
	}
	CHECK_RC(ilm_lock(c, &y, &op), -ETIME);
	mkop(&op, IDM_MODE_EXCLUSIVE, 60000);
	lock_when_free(b, &z, &op);
	CHECK_RC(ilm_unlock(b, &z), 0);
	CHECK_RC(ilm_start_renew(c), 0);
	CHECK_RC(ilm_disconnect(c), 0);
	CHECK_RC(ilm_disconnect(b), 0);

	unlink(marker);
	unlink(fifo);
	unlink(script);
	rmdir(dir);
	DONE();
}
