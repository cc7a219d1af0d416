/*
 * One host of the chaos test (tests/src/chaos/, `idm-chaos`): a process linking
 * libseagate_ilm that loops on one exclusive lock over the simulator's drives
 * and logs what it did, for the orchestrator's interval checker.
 *
 *   chaos_client SLOT LOG COUNTER STOPFILE LEASE_MS HOLD_MAX_US GAP_MAX_US SEED DRIVE...
 *
 * Host ID "chaos-host-SLOT" (a restarted client keeps it, so it takes its own
 * stale lock back). Fencing is SIGUSR1: the handler logs "fenced <ns>" and
 * exits with status 3 at once (the fence ends any critical section).
 *
 * Log lines (one write(2) each, O_APPEND; times are CLOCK_MONOTONIC ns, shared
 * by every process on the machine):
 *   start <ns> <pid>            the process is up
 *   lock <ns>                   ilm_lock called
 *   err <call> <errno> <ns>     a call returned -errno
 *   enter <ns>                  ilm_lock returned 0: the critical section begins
 *   lvb <ns> <16 hex>           ilm_read_lvb (called at <ns>) returned this value
 *   counter <read> <wrote>      read-modify-write of the shared counter file done
 *   wrote_lvb <value>           ilm_write_lvb of this value (the enter time in us)
 *   exit <ns>                   the critical section ends (before ilm_unlock)
 *   unlock <ns> <rc>            ilm_unlock returned rc at <ns> (a failure is
 *                               logged as err and retried, unlogged, until
 *                               0 or -ENOENT)
 *   fenced <ns>                 SIGUSR1 arrived (then _exit(3))
 *   stop <ns>                   STOPFILE seen: disconnected, exiting 0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ilm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int logfd = -1;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void logline(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(buf))
		_exit(5);
	if (write(logfd, buf, (size_t)n) != n)
		_exit(5);
}

/* Async-signal-safe: clock_gettime, write and _exit only. */
static void on_fence(int sig)
{
	(void)sig;
	char buf[48] = "fenced ";
	char digits[24];
	uint64_t t = now_ns();
	int nd = 0, n = 7;
	do {
		digits[nd++] = (char)('0' + t % 10);
		t /= 10;
	} while (t);
	while (nd)
		buf[n++] = digits[--nd];
	buf[n++] = '\n';
	if (write(logfd, buf, (size_t)n) != n)
		_exit(5);
	_exit(3);
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The counter file holds a decimal number (empty: 0). */
static long long counter_rmw(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		_exit(6);
	buf[n] = 0;
	long long c = n ? atoll(buf) : 0;
	int len = snprintf(buf, sizeof(buf), "%020lld\n", c + 1);
	if (pwrite(fd, buf, (size_t)len, 0) != len)
		_exit(6);
	return c;
}

int main(int argc, char **argv)
{
	if (argc < 10) {
		fprintf(stderr,
			"usage: %s SLOT LOG COUNTER STOPFILE LEASE_MS HOLD_MAX_US GAP_MAX_US SEED DRIVE...\n",
			argv[0]);
		return 2;
	}
	int slot = atoi(argv[1]);
	const char *stopfile = argv[4];
	int lease_ms = atoi(argv[5]);
	long hold_max_us = atol(argv[6]);
	long gap_max_us = atol(argv[7]);
	long seed = atol(argv[8]);
	int ndrives = argc - 9;
	if (ndrives > ILM_DRIVE_MAX_NUM)
		return 2;

	logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	int cfd = open(argv[3], O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (logfd < 0 || cfd < 0) {
		perror("open");
		return 2;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fence;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		return 2;
	srand48(seed);

	struct idm_lock_id id;
	memset(&id, 0, sizeof(id));
	memcpy(id.vg_uuid, "chaos-vg", 8);
	memcpy(id.lv_uuid, "chaos-lv", 8);
	static struct idm_lock_op op;
	memset(&op, 0, sizeof(op));
	op.mode = IDM_MODE_EXCLUSIVE;
	op.drive_num = (uint32_t)ndrives;
	for (int i = 0; i < ndrives; i++)
		op.drives[i] = argv[9 + i];
	op.timeout = lease_ms;

	char host[32];
	int hlen = snprintf(host, sizeof(host), "chaos-host-%d", slot);
	int s = -1, rc;
	logline("start %llu %d\n", (unsigned long long)now_ns(), (int)getpid());
	if ((rc = ilm_connect(&s)) != 0) {
		logline("err connect %d %llu\n", -rc, (unsigned long long)now_ns());
		return 4;
	}
	if ((rc = ilm_set_host_id(s, host, hlen)) != 0) {
		logline("err set_host_id %d %llu\n", -rc, (unsigned long long)now_ns());
		return 4;
	}
	if ((rc = ilm_set_signal(s, SIGUSR1)) != 0) {
		logline("err set_signal %d %llu\n", -rc, (unsigned long long)now_ns());
		return 4;
	}

	while (access(stopfile, F_OK) != 0) {
		logline("lock %llu\n", (unsigned long long)now_ns());
		rc = ilm_lock(s, &id, &op);
		if (rc != 0) {
			logline("err lock %d %llu\n", -rc, (unsigned long long)now_ns());
			/* EBUSY already waited IDM_LOCK_WAIT_MS; anything else
			 * (drives failing) gets a short pause before the retry. */
			if (rc != -EBUSY)
				sleep_us(20000);
			continue;
		}
		uint64_t enter = now_ns();
		logline("enter %llu\n", (unsigned long long)enter);

		char lvb[IDM_VALUE_LEN];
		uint64_t t_read = now_ns();
		rc = ilm_read_lvb(s, &id, lvb, IDM_VALUE_LEN);
		if (rc != 0) {
			logline("err read_lvb %d %llu\n", -rc, (unsigned long long)now_ns());
		} else {
			uint64_t v = 0;
			for (int i = 7; i >= 0; i--)
				v = (v << 8) | (uint8_t)lvb[i];
			logline("lvb %llu %016llx\n", (unsigned long long)t_read,
				(unsigned long long)v);
		}

		long long c = counter_rmw(cfd);
		logline("counter %lld %lld\n", c, c + 1);

		if (hold_max_us > 0)
			sleep_us(lrand48() % hold_max_us);

		/* The enter time in microseconds: grows from one holder to the
		 * next; byte 7 stays 0 (the drives do not keep it). */
		uint64_t value = (enter / 1000) & 0x00ffffffffffffffull;
		for (int i = 0; i < 8; i++)
			lvb[i] = (char)(value >> (8 * i));
		rc = ilm_write_lvb(s, &id, lvb, IDM_VALUE_LEN);
		if (rc != 0)
			logline("err write_lvb %d %llu\n", -rc, (unsigned long long)now_ns());
		else
			logline("wrote_lvb %llu\n", (unsigned long long)value);

		logline("exit %llu\n", (unsigned long long)now_ns());
		rc = ilm_unlock(s, &id);
		logline("unlock %llu %d\n", (unsigned long long)now_ns(), rc);
		/* A failed unlock may leave the lock in this lockspace (the next
		 * ilm_lock would be -EBUSY for ever): retry until it is gone. */
		for (int tries = 0; rc != 0 && rc != -ENOENT && tries < 100; tries++) {
			logline("err unlock %d %llu\n", -rc, (unsigned long long)now_ns());
			sleep_us(20000);
			rc = ilm_unlock(s, &id);
		}

		if (gap_max_us > 0)
			sleep_us(lrand48() % gap_max_us);
	}
	ilm_disconnect(s);
	logline("stop %llu\n", (unsigned long long)now_ns());
	return 0;
}
