/*
 * probe: time mremap() the way an ordinary program does, independently of perfsim's own
 * measuring code (perfsim/host, perfsim/calibrate).
 *
 * The buffers live where mmap(NULL) puts them (the normal mmap area, next to the process's
 * other mappings), the process keeps its default scheduling (no pinning, no nice), and the
 * clock is CLOCK_MONOTONIC read just around the system call. For each repetition:
 *
 *   1. reserve a PROT_NONE stretch with mmap(NULL) big enough for source and destination at
 *      the requested alignments, then release it again (the addresses stay free);
 *   2. map the source there (anonymous, private, read/write), advise THP off (or on), and
 *      write one byte to every page (or to one page in SPARSE, or none);
 *   3. time mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst), or with "shrink"
 *      mremap(src, len, len / 2, 0) (nothing moves: the tail half is unmapped, its written
 *      pages zapped; "dst" is then the source);
 *   4. unmap the destination or what is left of the source (and the guard page of "blocked").
 *
 * Alignment classes (A = a 1 GiB boundary + 2 MiB, B = another + 6 MiB):
 *   pud_aligned   src 1 GiB aligned        dst 1 GiB aligned
 *   pmd_aligned   src A                    dst B
 *   realignable   src A + 4 KiB            dst B + 4 KiB      (nothing mapped below either)
 *   blocked       src A + 4 KiB with a read-only page mapped and touched at [A, A + 4 KiB)
 *   unaligned     src A + 4 KiB            dst B + 8 KiB
 *
 * Usage: probe CLASS SIZE_BYTES REPS [full|sparse|none] [thp|nothp] [move|shrink]
 * Output: one JSON object per repetition on stdout:
 *   {"class": "...", "size": N, "rep": i, "latency_ns": T, "src": S, "dst": D,
 *    "cpu": C, "cpus_seen": K, "op": "move"|"shrink"}
 * where C is the CPU the call started on and K the number of distinct CPUs this process has
 * been seen on so far (a program that is not pinned migrates; on x86 the CPUs it ran on stay
 * in its mm's CPU mask for a while and get a shootdown IPI on every flush).
 * Exit status 0, or 1 with a message on stderr.
 *
 * Written for perfsim (probes/latency/); built at run time by perfsim.calibrate.probe with
 * the system C compiler. No kernel code in here: only the system call interface.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define KIB (1UL << 10)
#define MIB (1UL << 20)
#define GIB (1UL << 30)
#define SPARSE_EVERY 16

static unsigned long page;
static unsigned char seen[4096];
static int nseen;

static void note_cpu(int cpu)
{
	if (cpu >= 0 && cpu < (int)sizeof(seen) && !seen[cpu]) {
		seen[cpu] = 1;
		nseen++;
	}
}

static void die(const char *what)
{
	fprintf(stderr, "probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uintptr_t align_up(uintptr_t x, uintptr_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static int offsets(const char *cls, unsigned long *soff, unsigned long *doff)
{
	if (!strcmp(cls, "pud_aligned")) {
		*soff = 0;
		*doff = 0;
	} else if (!strcmp(cls, "pmd_aligned")) {
		*soff = 2 * MIB;
		*doff = 6 * MIB;
	} else if (!strcmp(cls, "realignable") || !strcmp(cls, "blocked")) {
		*soff = 2 * MIB + 4 * KIB;
		*doff = 6 * MIB + 4 * KIB;
	} else if (!strcmp(cls, "unaligned")) {
		*soff = 2 * MIB + 4 * KIB;
		*doff = 6 * MIB + 8 * KIB;
	} else {
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long soff, doff, size, span, total;
	const char *cls, *pop = "full", *thp = "nothp", *op = "move";
	int shrink;
	long reps;

	if (argc < 4 || argc > 7) {
		fprintf(stderr, "usage: probe CLASS SIZE_BYTES REPS [full|sparse|none] [thp|nothp] "
				"[move|shrink]\n");
		return 1;
	}
	cls = argv[1];
	size = strtoul(argv[2], NULL, 0);
	reps = strtol(argv[3], NULL, 0);
	if (argc > 4)
		pop = argv[4];
	if (argc > 5)
		thp = argv[5];
	if (argc > 6)
		op = argv[6];
	shrink = !strcmp(op, "shrink");
	page = (unsigned long)sysconf(_SC_PAGESIZE);
	if (offsets(cls, &soff, &doff) || size == 0 || size % page || reps < 1 ||
	    (!shrink && strcmp(op, "move")) || (shrink && size % (2 * page))) {
		fprintf(stderr, "probe: bad arguments\n");
		return 1;
	}
	/* source region [R, R + span), destination region [R + span + 1G, ...), 1 GiB aligned */
	span = align_up(size + 8 * MIB, GIB);
	total = 2 * span + 2 * GIB;

	note_cpu(sched_getcpu());
	for (long i = 0; i < reps; i++) {
		char *res = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				 -1, 0);
		uintptr_t base, src, dst;
		char *s;
		uint64_t t0, t1;
		void *r;
		int cpu;

		if (res == MAP_FAILED)
			die("reserve");
		base = align_up((uintptr_t)res, GIB);
		src = base + soff;
		dst = base + span + GIB + doff;
		if (munmap(res, total))
			die("release");
		if (!strcmp(cls, "blocked")) {
			char *g = mmap((void *)(src - page), page, PROT_READ,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			volatile char c;

			if (g == MAP_FAILED)
				die("guard");
			c = g[0];
			(void)c;
		}
		s = mmap((void *)src, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (s == MAP_FAILED)
			die("source");
		madvise(s, size, !strcmp(thp, "thp") ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		if (!strcmp(pop, "full")) {
			for (unsigned long o = 0; o < size; o += page)
				s[o] = 1;
		} else if (!strcmp(pop, "sparse")) {
			unsigned long step = SPARSE_EVERY * page;

			for (uintptr_t a = align_up(src, step); a < src + size; a += step)
				((char *)a)[0] = 1;
		}
		note_cpu(sched_getcpu());
		cpu = sched_getcpu();
		t0 = now_ns();
		if (shrink)
			r = mremap(s, size, size / 2, 0);
		else
			r = mremap(s, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)dst);
		t1 = now_ns();
		note_cpu(sched_getcpu());
		if (r == MAP_FAILED)
			die("mremap");
		if (shrink)
			dst = src;
		printf("{\"class\": \"%s\", \"size\": %lu, \"rep\": %ld, \"latency_ns\": %llu, "
		       "\"src\": %llu, \"dst\": %llu, \"cpu\": %d, \"cpus_seen\": %d, "
		       "\"op\": \"%s\"}\n", cls, size,
		       i, (unsigned long long)(t1 - t0), (unsigned long long)src,
		       (unsigned long long)dst, cpu, nseen, shrink ? "shrink" : "move");
		if (munmap(r, shrink ? size / 2 : size))
			die("unmap destination");
		if (!strcmp(cls, "blocked") && munmap((void *)(src - page), page))
			die("unmap guard");
	}
	return 0;
}
