/*
 * zap_survey: what zapping present PTEs costs, by backing (docs/calibration.md, "Zapping
 * written memory"). Not used by perfsim calibrate (its design times shrinks with timer.c);
 * this is the survey behind the figures the docs quote, kept so anyone can re-run it.
 *
 * Usage:  zap_survey KIND TOUCH OP SIZE_BYTES THP
 *   KIND   anon (private anonymous) | shm (shared memfd) | tmpfs (a file in /dev/shm) |
 *          ext4 (a file in /var/tmp; this machine's root filesystem)
 *   TOUCH  w (write one byte per page) | r (the file is written with pwrite first, then
 *          every page read: read-only faults) | n (touch nothing)
 *   OP     shrink: mremap(p, 2*SIZE, SIZE, 0), the tail SIZE bytes are unmapped;
 *          fixed:  mremap(p, SIZE, SIZE, MAYMOVE|FIXED, p + SIZE), the destination (the
 *                  second half, touched as TOUCH says) is unmapped first;
 *          munmap: munmap(p + SIZE, SIZE)
 *   THP    1: madvise(MADV_HUGEPAGE) (anon / shm), 0: MADV_NOHUGEPAGE
 * Each of 11 repetitions maps 2*SIZE fresh at a 2 MiB-aligned address and times only the
 * call (CLOCK_MONOTONIC). Prints the median and the median per 4 KiB page of SIZE.
 *
 * Build: cc -O2 -o zap_survey probes/calibrate/zap_survey.c
 * Written for perfsim; only the system call interface, no kernel code.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define REPS 11
#define PMD (2UL << 20)

static unsigned long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (unsigned long long)t.tv_sec * 1000000000ULL + (unsigned long long)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	unsigned long long lat[REPS];
	const char *kind, *touch, *op;
	unsigned long size, page = (unsigned long)sysconf(_SC_PAGESIZE);
	int thp;

	if (argc != 6) {
		fprintf(stderr, "usage: zap_survey anon|shm|tmpfs|ext4 w|r|n shrink|fixed|munmap "
				"SIZE_BYTES 0|1\n");
		return 2;
	}
	kind = argv[1];
	touch = argv[2];
	op = argv[3];
	size = strtoul(argv[4], NULL, 0);
	thp = atoi(argv[5]);
	if (!size || size % page) {
		fprintf(stderr, "zap_survey: SIZE_BYTES must be a positive multiple of %lu\n", page);
		return 2;
	}
	for (int r = 0; r < REPS; r++) {
		int fd = -1, flags = MAP_PRIVATE | MAP_ANONYMOUS, file = 0;
		unsigned long long t0, t1;
		unsigned long span = 2 * size + 4 * PMD, base;
		volatile char sink = 0;
		char path[64], *res, *p;
		void *q = NULL;

		if (!strcmp(kind, "shm")) {
			fd = memfd_create("zap_survey", 0);
			if (fd < 0 || ftruncate(fd, (off_t)(2 * size)))
				die("memfd");
			flags = MAP_SHARED;
		} else if (!strcmp(kind, "tmpfs") || !strcmp(kind, "ext4")) {
			file = 1;
			snprintf(path, sizeof(path), "%s/zap_survey.%d",
				 !strcmp(kind, "tmpfs") ? "/dev/shm" : "/var/tmp", (int)getpid());
			fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
			if (fd < 0 || ftruncate(fd, (off_t)(2 * size)))
				die("file");
			unlink(path);
			if (*touch == 'r') {
				char *buf = malloc(2 * size);

				if (!buf)
					die("malloc");
				memset(buf, 1, 2 * size);
				if (pwrite(fd, buf, 2 * size, 0) != (ssize_t)(2 * size))
					die("pwrite");
				free(buf);
				fsync(fd);
			}
			flags = MAP_SHARED;
		} else if (strcmp(kind, "anon")) {
			fprintf(stderr, "zap_survey: unknown KIND %s\n", kind);
			return 2;
		}
		res = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (res == MAP_FAILED)
			die("reserve");
		base = ((unsigned long)res + PMD - 1) & ~(PMD - 1);
		munmap(res, span);
		p = mmap((void *)base, 2 * size, PROT_READ | PROT_WRITE, flags | MAP_FIXED_NOREPLACE,
			 fd, 0);
		if (p == MAP_FAILED)
			die("mmap");
		if (!file)
			madvise(p, 2 * size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		for (unsigned long o = 0; o < 2 * size; o += page) {
			if (*touch == 'w')
				p[o] = 1;
			else if (*touch == 'r')
				sink += p[o];
		}
		if (!strcmp(op, "shrink")) {
			t0 = now_ns();
			q = mremap(p, 2 * size, size, 0);
			t1 = now_ns();
			if (q == MAP_FAILED)
				die("mremap shrink");
			munmap(p, size);
		} else if (!strcmp(op, "munmap")) {
			t0 = now_ns();
			if (munmap(p + size, size))
				die("munmap");
			t1 = now_ns();
			munmap(p, size);
		} else if (!strcmp(op, "fixed")) {
			t0 = now_ns();
			q = mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, p + size);
			t1 = now_ns();
			if (q == MAP_FAILED)
				die("mremap fixed");
			munmap(p + size, size);
		} else {
			fprintf(stderr, "zap_survey: unknown OP %s\n", op);
			return 2;
		}
		lat[r] = t1 - t0;
		if (fd >= 0)
			close(fd);
	}
	qsort(lat, REPS, sizeof(lat[0]), cmp);
	printf("%s %s %s %lu thp=%d median_ns=%llu per_page_ns=%.0f\n", kind, touch, op, size, thp,
	       lat[REPS / 2], (double)lat[REPS / 2] / (double)(size / page));
	return 0;
}
