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
 *   THP    1: madvise(MADV_HUGEPAGE) (anon / shm), 0: MADV_NOHUGEPAGE,
 *          mN (anon only; root): mTHP folios of N KiB (m16, m64, ...): for the run,
 *                  /sys/kernel/mm/transparent_hugepage/hugepages-NkB/enabled is set to
 *                  "always" (its setting is put back at exit, on an error and on SIGINT,
 *                  SIGTERM, SIGHUP) and nothing is madvised (MADV_NOHUGEPAGE would turn
 *                  mTHP off too; PMD-size THP stays as the top-level setting says, here
 *                  "madvise": not used). The folios are checked, outside the timed call:
 *                  the first repetition reads /proc/self/pagemap and /proc/kpageflags for
 *                  every page of the 2*SIZE mapping (compound heads and tails: a whole
 *                  mapping of N KiB folios has 2*SIZE/N heads), and every repetition the
 *                  size's stats/anon_fault_alloc and anon_fault_fallback counters
 *                  (system-wide: other processes' faults add to them). Printed as
 *                  folio_heads, folio_tails (want_heads: 2*SIZE/N KiB), and fault_alloc,
 *                  fault_fallback summed over the repetitions (want_faults: 11 * that).
 * Each of 11 repetitions maps 2*SIZE fresh at a 2 MiB-aligned address and times only the
 * call (CLOCK_MONOTONIC). Prints the median and the median per 4 KiB page of SIZE.
 *
 * Build: cc -O2 -o zap_survey probes/calibrate/zap_survey.c
 * Written for perfsim; only the system call interface, no kernel code.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
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

/* ---------------------------------------------------------------- mTHP (THP = mN) */
#define MTHP_DIR "/sys/kernel/mm/transparent_hugepage/hugepages-%lukB/"
static char mthp_enabled[128];	/* the size's "enabled" file, once set */
static char mthp_old[16];	/* its setting before ("never", "inherit", ...) */

static int write_str(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

static void mthp_restore(void)
{
	if (!mthp_enabled[0])
		return;
	if (write_str(mthp_enabled, mthp_old))
		fprintf(stderr, "zap_survey: could not put %s back to %s\n", mthp_enabled, mthp_old);
	mthp_enabled[0] = 0;
}

static void on_signal(int sig)
{
	mthp_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Set hugepages-<kb>kB/enabled to "always", remembering the bracketed current value. */
static void mthp_enable(unsigned long kb)
{
	char path[128], buf[128], *l, *r;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), MTHP_DIR "enabled", kb);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "zap_survey: %s: no such mTHP size on this kernel\n", path);
		exit(2);
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	l = strchr(buf, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!l || !r || r - l - 1 >= (long)sizeof(mthp_old)) {
		fprintf(stderr, "zap_survey: %s: unexpected contents\n", path);
		exit(1);
	}
	memcpy(mthp_old, l + 1, r - l - 1);
	mthp_old[r - l - 1] = 0;
	strcpy(mthp_enabled, path);
	atexit(mthp_restore);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	if (write_str(path, "always")) {
		mthp_enabled[0] = 0;
		fprintf(stderr, "zap_survey: cannot write %s (root needed)\n", path);
		exit(2);
	}
}

static unsigned long long mthp_stat(unsigned long kb, const char *name)
{
	char path[160], buf[32];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), MTHP_DIR "stats/%s", kb, name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return strtoull(buf, NULL, 0);
}

/* Compound heads and tails among the pages of [p, p + len) (pagemap + kpageflags). */
static void folio_pages(const char *p, unsigned long len, unsigned long page,
			unsigned long *heads, unsigned long *tails)
{
	int pm = open("/proc/self/pagemap", O_RDONLY), kf = open("/proc/kpageflags", O_RDONLY);

	if (pm < 0 || kf < 0)
		die("pagemap/kpageflags");
	*heads = *tails = 0;
	for (unsigned long o = 0; o < len; o += page) {
		uint64_t ent, flags;

		if (pread(pm, &ent, 8, (off_t)(((unsigned long)p + o) / page * 8)) != 8)
			die("pagemap");
		if (!(ent >> 63) || !(ent & ((1ULL << 55) - 1)))
			continue;	/* not present, or no PFN shown */
		if (pread(kf, &flags, 8, (off_t)((ent & ((1ULL << 55) - 1)) * 8)) != 8)
			die("kpageflags");
		*heads += (flags >> 15) & 1;	/* KPF_COMPOUND_HEAD */
		*tails += (flags >> 16) & 1;	/* KPF_COMPOUND_TAIL */
	}
	close(pm);
	close(kf);
}

int main(int argc, char **argv)
{
	unsigned long long lat[REPS];
	const char *kind, *touch, *op;
	unsigned long size, page = (unsigned long)sysconf(_SC_PAGESIZE);
	unsigned long mthp_kb = 0, heads = 0, tails = 0;
	unsigned long long alloc0 = 0, fall0 = 0, alloc = 0, fall = 0;
	int thp;

	if (argc != 6) {
		fprintf(stderr, "usage: zap_survey anon|shm|tmpfs|ext4 w|r|n shrink|fixed|munmap "
				"SIZE_BYTES 0|1|mN\n");
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
	if (argv[5][0] == 'm') {
		char *e;

		mthp_kb = strtoul(argv[5] + 1, &e, 10);
		if (*e || !mthp_kb || (mthp_kb << 10) % page || strcmp(kind, "anon")) {
			fprintf(stderr, "zap_survey: THP mN needs KIND anon and N KiB a multiple "
					"of the page size, e.g. m64\n");
			return 2;
		}
		thp = 0;
		mthp_enable(mthp_kb);
	} else if (strcmp(argv[5], "0") && strcmp(argv[5], "1")) {
		fprintf(stderr, "zap_survey: THP must be 0, 1 or mN (e.g. m64)\n");
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
		if (!file && !mthp_kb)
			madvise(p, 2 * size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		if (mthp_kb) {
			alloc0 = mthp_stat(mthp_kb, "anon_fault_alloc");
			fall0 = mthp_stat(mthp_kb, "anon_fault_fallback");
		}
		for (unsigned long o = 0; o < 2 * size; o += page) {
			if (*touch == 'w')
				p[o] = 1;
			else if (*touch == 'r')
				sink += p[o];
		}
		if (mthp_kb) {
			alloc += mthp_stat(mthp_kb, "anon_fault_alloc") - alloc0;
			fall += mthp_stat(mthp_kb, "anon_fault_fallback") - fall0;
			if (!r)
				folio_pages(p, 2 * size, page, &heads, &tails);
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
	if (mthp_kb) {
		printf("%s %s %s %lu thp=m%lu median_ns=%llu per_page_ns=%.0f folio_heads=%lu "
		       "folio_tails=%lu want_heads=%lu fault_alloc=%llu fault_fallback=%llu "
		       "want_faults=%lu\n",
		       kind, touch, op, size, mthp_kb, lat[REPS / 2],
		       (double)lat[REPS / 2] / (double)(size / page), heads, tails,
		       2 * size / (mthp_kb << 10), alloc, fall, REPS * 2 * size / (mthp_kb << 10));
		mthp_restore();
		return 0;
	}
	printf("%s %s %s %lu thp=%d median_ns=%llu per_page_ns=%.0f\n", kind, touch, op, size, thp,
	       lat[REPS / 2], (double)lat[REPS / 2] / (double)(size / page));
	return 0;
}
