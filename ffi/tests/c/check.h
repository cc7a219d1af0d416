/* Small test helpers shared by the C clients. */
#ifndef IDM_TEST_CHECK_H
#define IDM_TEST_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks_run;

#define CHECK(cond)                                                          \
	do {                                                                 \
		checks_run++;                                                \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: check failed: %s\n",         \
				__FILE__, __LINE__, #cond);                  \
			exit(1);                                             \
		}                                                            \
	} while (0)

/* Checks that an expression returns exactly `want` (0 or a negative errno). */
#define CHECK_RC(expr, want)                                                 \
	do {                                                                 \
		long rc_ = (long)(expr);                                     \
		checks_run++;                                                \
		if (rc_ != (long)(want)) {                                   \
			fprintf(stderr, "%s:%d: %s returned %ld (%s), want %ld\n", \
				__FILE__, __LINE__, #expr, rc_,              \
				rc_ < 0 ? strerror((int)-rc_) : "ok",        \
				(long)(want));                               \
			exit(1);                                             \
		}                                                            \
	} while (0)

#define DONE()                                                               \
	do {                                                                 \
		printf("ok: %d checks\n", checks_run);                       \
		return 0;                                                    \
	} while (0)

#endif
