/*
 * timer: perfsim calibrate's C timing helper for the "ordinary" condition.
 *
 * perfsim's Python driver keeps the design, the shuffling, the rounds, load detection, the
 * tracing pass and the statistics; this program only does what a Python process cannot do
 * without changing what it measures: build one configuration's layout and move it in a
 * tight C loop, as an ordinary program would, so the kernel's code and data are as warm as
 * in any C program calling mremap() (a Python process's work between calls leaves them cold,
 * see docs/calibration.md "Small calls").
 *
 * It is NOT the validation probe (probes/latency/probe.c): the probe must stay independent
 * of perfsim's measuring code, so the two share no code.
 *
 * For each repetition:
 *   1. reserve a PROT_NONE stretch with mmap(NULL) (the normal mmap area), note a 1 GiB
 *      aligned base inside it, release it again;
 *   2. map the source at base + offset (anonymous private, or a shared memfd, or 2 MiB
 *      hugetlb), advise THP on or off (not for hugetlb), for "blocked" map and read-touch a
 *      read-only page just below it, and write one byte to every page (full), to every 16th
 *      page (sparse: absolute addresses that are multiples of 64 KiB) or to none;
 *   3. read the source's /proc/self/smaps THP / hugetlb counters (every repetition of a THP
 *      or hugetlb configuration, else the first one only);
 *   4. with 2 threads: wait until the spinner thread (same process, pinned to the other CPU,
 *      spinning in user space) has advanced since the last call;
 *   5. read the disturbance counters, CLOCK_MONOTONIC, mremap(MAYMOVE|FIXED), CLOCK_MONOTONIC,
 *      the counters again (shrink: mremap(src, SIZE, SIZE / 2, 0) instead: nothing moves,
 *      the tail half is unmapped, its present PTEs zapped; "dst" is then the source;
 *      dontunmap: mremap(MAYMOVE|FIXED|DONTUNMAP): the same move, the source VMA kept);
 *   6. unmap the destination or the shrunk source (and a DONTUNMAP move's kept source, the
 *      guard page; close the memfd).
 *
 * Layout offsets from the 1 GiB aligned region starts (perfsim.host.layout.SHAPE_OFFSETS):
 *   pud_aligned 0 / 0, pmd_aligned 2M / 6M, realignable and blocked 2M+4K / 6M+4K,
 *   unaligned 2M+4K / 6M+8K; the destination region starts span + 1 GiB after the source's,
 *   span = size + 8 MiB rounded up to 1 GiB.
 *
 * Scheduling: one thread: default (not pinned, nice unchanged). Two threads: the caller is
 * pinned to MAIN_CPU and the spinner to SPIN_CPU (a flush then needs an IPI to a CPU that is
 * really running the mm), both at the nice they inherited.
 *
 * Usage:
 *   timer move|shrink|dontunmap CLASS SIZE_BYTES REPS POPULATE BACKING THP THREADS [MAIN_CPU SPIN_CPU]
 *       POPULATE full|sparse|none, BACKING anon|memfd|hugetlb, THP thp|nothp, THREADS 1|2
 *   timer entry REPS
 *       mremap(old_address = 1) -> EINVAL before mmap_lock: the cost of entering the call
 *   TIMER_EVICT_BYTES=N timer move ...
 *       an experiment, not used by perfsim calibrate: after populating, write one byte per
 *       64-byte line of a separate, already populated N-byte buffer, so the call starts with
 *       the caches as the caller's own memory traffic leaves them (docs/calibration.md,
 *       "The cold-cache cost")
 *
 * Output (stdout), one JSON object per line:
 *   move:  {"rep": i, "src": S, "dst": D, "latency_ns": T, "populate_ns": P,
 *           "thp_kb": K, "hugetlb_kb": H, "cpu_before": C0, "cpu_after": C1,
 *           "cpus_seen": N, "main_run_delay_ns": d, "main_pcount": p, "main_nivcsw": v,
 *           "spin_run_delay_ns": d2, "spin_pcount": p2}
 *          thp_kb / hugetlb_kb are -1 when smaps was not read; the main_* and spin_*
 *          fields are the growth of the counters over the timed call (run_delay and
 *          pcount from /proc/self/task/TID/schedstat, nivcsw from getrusage); spin_* are
 *          -1 with one thread.
 *   entry: {"kind": "entry", "latency_ns": [t1, t2, ...]}
 * Exit status 0; 1 with a message on stderr (bad arguments, a failed system call); 3 when
 * the spinner thread did not run for 5 s (machine busy).
 *
 * Written for perfsim (probes/calibrate/); built at run time by perfsim.calibrate.timer with
 * the system C compiler. No kernel code in here: only the system call interface.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 1U
#endif

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#define KIB (1UL << 10)
#define MIB (1UL << 20)
#define GIB (1UL << 30)
#define SPARSE_EVERY 16
#define STALL_NS 5000000000ULL

static unsigned long page;

struct counters {
	long long run_delay, pcount, nivcsw;
};

static atomic_ulong spin_iter;
static atomic_int spin_stop;
static atomic_int spin_tid;
static int spin_cpu = 1;

static void die(const char *what)
{
	fprintf(stderr, "timer: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uintptr_t round_up(uintptr_t x, uintptr_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static int class_offsets(const char *cls, unsigned long *src_off, unsigned long *dst_off)
{
	static const struct {
		const char *name;
		unsigned long s, d;
	} tab[] = {
		{ "pud_aligned", 0, 0 },
		{ "pmd_aligned", 2 * MIB, 6 * MIB },
		{ "realignable", 2 * MIB + 4 * KIB, 6 * MIB + 4 * KIB },
		{ "blocked", 2 * MIB + 4 * KIB, 6 * MIB + 4 * KIB },
		{ "unaligned", 2 * MIB + 4 * KIB, 6 * MIB + 8 * KIB },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (!strcmp(cls, tab[i].name)) {
			*src_off = tab[i].s;
			*dst_off = tab[i].d;
			return 0;
		}
	}
	return -1;
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

/* run_delay (field 2) and pcount (field 3) of a thread's schedstat, read from an open fd */
static void read_schedstat(int fd, struct counters *c)
{
	char buf[128];
	unsigned long long on_cpu = 0, delay = 0, cnt = 0;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0) {
		c->run_delay = c->pcount = -1;
		return;
	}
	buf[n] = 0;
	if (sscanf(buf, "%llu %llu %llu", &on_cpu, &delay, &cnt) != 3) {
		c->run_delay = c->pcount = -1;
		return;
	}
	c->run_delay = (long long)delay;
	c->pcount = (long long)cnt;
}

static void read_main(int fd, struct counters *c)
{
	struct rusage ru;

	read_schedstat(fd, c);
	c->nivcsw = getrusage(RUSAGE_THREAD, &ru) ? -1 : ru.ru_nivcsw;
}

static int open_schedstat(int tid)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open schedstat");
	return fd;
}

static void *spinner(void *arg)
{
	(void)arg;
	pin(spin_cpu);
	atomic_store(&spin_tid, (int)syscall(SYS_gettid));
	while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
		atomic_fetch_add_explicit(&spin_iter, 1, memory_order_relaxed);
	return NULL;
}

/* 0 once the spinner has advanced past `since`, -1 after STALL_NS without progress */
static int wait_spinner(unsigned long since)
{
	uint64_t end = now_ns() + STALL_NS;

	while (atomic_load_explicit(&spin_iter, memory_order_relaxed) == since) {
		if (now_ns() > end)
			return -1;
		sched_yield();
	}
	return 0;
}

/* "start-end perms ...": a VMA's first line in smaps (counter lines start with a capital) */
static int is_vma_header(const char *line)
{
	const char *p = line;

	while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
		p++;
	return p > line && *p == '-';
}

/* THP (AnonHugePages + ShmemPmdMapped + FilePmdMapped) and hugetlb kB of the VMA at `start` */
static void smaps_of(uintptr_t start, long *thp_kb, long *hugetlb_kb)
{
	char want[32], line[1024];
	FILE *f = fopen("/proc/self/smaps", "r");
	int found = 0;
	long v;

	*thp_kb = 0;
	*hugetlb_kb = 0;
	if (!f)
		die("open /proc/self/smaps");
	snprintf(want, sizeof(want), "%lx-", (unsigned long)start);
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (is_vma_header(line)) {
			if (found)
				break;
			found = !strncmp(line, want, strlen(want));
			continue;
		}
		if (!found || !colon)
			continue;
		v = strtol(colon + 1, NULL, 10);
		if (!strncmp(line, "AnonHugePages:", 14) || !strncmp(line, "ShmemPmdMapped:", 15) ||
		    !strncmp(line, "FilePmdMapped:", 14))
			*thp_kb += v;
		else if (!strncmp(line, "Private_Hugetlb:", 16) ||
			 !strncmp(line, "Shared_Hugetlb:", 15))
			*hugetlb_kb += v;
	}
	fclose(f);
	if (!found) {
		errno = ENOENT;
		die("source VMA not in /proc/self/smaps");
	}
}

static int entry(long reps)
{
	uint64_t *lat = calloc((size_t)reps, sizeof(*lat));

	if (!lat)
		die("calloc");
	for (long i = 0; i < reps; i++) {
		uint64_t t0 = now_ns();
		void *r = mremap((void *)1, page, page, MREMAP_MAYMOVE);
		uint64_t t1 = now_ns();

		if (r != MAP_FAILED) {
			fprintf(stderr, "timer: an unaligned mremap() succeeded\n");
			return 1;
		}
		lat[i] = t1 - t0;
	}
	printf("{\"kind\": \"entry\", \"latency_ns\": [");
	for (long i = 0; i < reps; i++)
		printf("%s%llu", i ? ", " : "", (unsigned long long)lat[i]);
	printf("]}\n");
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long soff, doff, size, span, total;
	const char *cls, *pop, *backing;
	int thp, threads, shrink, dontunmap, main_cpu = 0, main_fd, spin_fd = -1, last_cpu = -1;
	int nseen = 0;
	unsigned char seen[1024] = { 0 };
	unsigned long since = 0, evict_bytes = 0;
	char *evict = NULL;
	pthread_t th;
	long reps;

	page = (unsigned long)sysconf(_SC_PAGESIZE);
	if (argc == 3 && !strcmp(argv[1], "entry")) {
		reps = strtol(argv[2], NULL, 0);
		if (reps < 1) {
			fprintf(stderr, "timer: bad arguments\n");
			return 1;
		}
		return entry(reps);
	}
	if ((argc != 9 && argc != 11) || (strcmp(argv[1], "move") && strcmp(argv[1], "shrink") &&
					  strcmp(argv[1], "dontunmap"))) {
		fprintf(stderr, "usage: timer move|shrink|dontunmap CLASS SIZE_BYTES REPS full|sparse|none "
				"anon|memfd|hugetlb thp|nothp 1|2 [MAIN_CPU SPIN_CPU]\n"
				"       timer entry REPS\n");
		return 1;
	}
	shrink = !strcmp(argv[1], "shrink");
	dontunmap = !strcmp(argv[1], "dontunmap");
	cls = argv[2];
	size = strtoul(argv[3], NULL, 0);
	reps = strtol(argv[4], NULL, 0);
	pop = argv[5];
	backing = argv[6];
	thp = !strcmp(argv[7], "thp");
	threads = atoi(argv[8]);
	if (argc == 11) {
		main_cpu = atoi(argv[9]);
		spin_cpu = atoi(argv[10]);
	}
	if (class_offsets(cls, &soff, &doff) || size == 0 || size % page || reps < 1 ||
	    (strcmp(pop, "full") && strcmp(pop, "sparse") && strcmp(pop, "none")) ||
	    (strcmp(backing, "anon") && strcmp(backing, "memfd") && strcmp(backing, "hugetlb")) ||
	    (!thp && strcmp(argv[7], "nothp")) || (threads != 1 && threads != 2) ||
	    (!strcmp(backing, "hugetlb") && (size % (2 * MIB) || soff % (2 * MIB))) ||
	    (shrink && (size % (2 * page) || !strcmp(backing, "hugetlb"))) ||
	    (dontunmap && !strcmp(backing, "hugetlb"))) {
		fprintf(stderr, "timer: bad arguments\n");
		return 1;
	}
	span = round_up(size + 8 * MIB, GIB);
	total = 2 * span + GIB;
	if (getenv("TIMER_EVICT_BYTES")) {
		evict_bytes = strtoul(getenv("TIMER_EVICT_BYTES"), NULL, 0);
		if (evict_bytes) {
			evict = mmap(NULL, evict_bytes, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
			if (evict == MAP_FAILED)
				die("map eviction buffer");
		}
	}

	main_fd = open_schedstat((int)syscall(SYS_gettid));
	if (threads == 2) {
		pin(main_cpu);
		if (pthread_create(&th, NULL, spinner, NULL)) {
			errno = EAGAIN;
			die("pthread_create");
		}
		while (!atomic_load(&spin_tid))
			sched_yield();
		spin_fd = open_schedstat(atomic_load(&spin_tid));
	}

	for (long i = 0; i < reps; i++) {
		char *res = mmap(NULL, total + GIB, PROT_NONE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		int hugetlb = !strcmp(backing, "hugetlb"), fd = -1, flags, cpu0, cpu1;
		long thp_kb = -1, hugetlb_kb = -1;
		struct counters mb, ma, sb = { -1, -1, -1 }, sa = { -1, -1, -1 };
		uintptr_t base, src, dst;
		uint64_t p0, p1, t0, t1;
		char *s;
		void *r;

		if (res == MAP_FAILED)
			die("reserve");
		base = round_up((uintptr_t)res, GIB);
		src = base + soff;
		dst = base + span + GIB + doff;
		if (munmap(res, total + GIB))
			die("release");
		if (!strcmp(cls, "blocked")) {
			char *g = mmap((void *)(src - page), page, PROT_READ,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			volatile char c;

			if (g == MAP_FAILED)
				die("guard page");
			c = g[0];
			(void)c;
		}
		flags = MAP_FIXED_NOREPLACE;
		if (hugetlb) {
			flags |= MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
		} else if (!strcmp(backing, "memfd")) {
			fd = memfd_create("perfsim-timer", MFD_CLOEXEC);
			if (fd < 0)
				die("memfd_create");
			if (ftruncate(fd, (off_t)size))
				die("ftruncate");
			flags |= MAP_SHARED;
		} else {
			flags |= MAP_PRIVATE | MAP_ANONYMOUS;
		}
		s = mmap((void *)src, size, PROT_READ | PROT_WRITE, flags, fd, 0);
		if (s == MAP_FAILED)
			die(hugetlb ? "map hugetlb source (vm.nr_hugepages reserved?)" : "map source");
		if (!hugetlb && madvise(s, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
			die("madvise");
		p0 = now_ns();
		if (!strcmp(pop, "full")) {
			for (unsigned long o = 0; o < size; o += page)
				((volatile char *)s)[o] = 1;
		} else if (!strcmp(pop, "sparse")) {
			unsigned long step = SPARSE_EVERY * page;

			for (uintptr_t a = round_up(src, step); a < src + size; a += step)
				*(volatile char *)a = 1;
		}
		p1 = now_ns();
		for (unsigned long o = 0; o < evict_bytes; o += 64)
			((volatile char *)evict)[o]++;
		if (thp || hugetlb || i == 0)
			smaps_of(src, &thp_kb, &hugetlb_kb);
		if (threads == 2) {
			if (wait_spinner(since)) {
				fprintf(stderr, "timer: the spinner thread on CPU %d did not run for "
						"5 s (machine busy)\n", spin_cpu);
				fflush(stdout);
				_exit(3);
			}
			read_schedstat(spin_fd, &sb);
		}
		read_main(main_fd, &mb);
		cpu0 = sched_getcpu();
		t0 = now_ns();
		if (shrink)
			r = mremap(s, size, size / 2, 0);
		else
			r = mremap(s, size, size, MREMAP_MAYMOVE | MREMAP_FIXED |
				   (dontunmap ? MREMAP_DONTUNMAP : 0), (void *)dst);
		t1 = now_ns();
		if (shrink)
			dst = src;
		cpu1 = sched_getcpu();
		read_main(main_fd, &ma);
		if (threads == 2) {
			read_schedstat(spin_fd, &sa);
			since = atomic_load_explicit(&spin_iter, memory_order_relaxed);
		}
		if (r == MAP_FAILED)
			die("mremap");
		for (int c = 0; c < 2; c++) {
			int cpu = c ? cpu1 : cpu0;

			if (cpu >= 0 && cpu < (int)sizeof(seen) && !seen[cpu]) {
				seen[cpu] = 1;
				nseen++;
			}
		}
		printf("{\"rep\": %ld, \"src\": %llu, \"dst\": %llu, \"latency_ns\": %llu, "
		       "\"populate_ns\": %llu, \"thp_kb\": %ld, \"hugetlb_kb\": %ld, "
		       "\"cpu_before\": %d, \"cpu_after\": %d, \"cpu_last\": %d, \"cpus_seen\": %d, "
		       "\"main_run_delay_ns\": %lld, \"main_pcount\": %lld, \"main_nivcsw\": %lld, "
		       "\"spin_run_delay_ns\": %lld, \"spin_pcount\": %lld}\n",
		       i, (unsigned long long)src, (unsigned long long)dst,
		       (unsigned long long)(t1 - t0), (unsigned long long)(p1 - p0), thp_kb,
		       hugetlb_kb, cpu0, cpu1, last_cpu, nseen, ma.run_delay - mb.run_delay,
		       ma.pcount - mb.pcount, ma.nivcsw - mb.nivcsw,
		       threads == 2 ? sa.run_delay - sb.run_delay : -1,
		       threads == 2 ? sa.pcount - sb.pcount : -1);
		last_cpu = cpu1;
		if (munmap(r, shrink ? size / 2 : size))
			die(shrink ? "unmap the shrunk source" : "unmap destination");
		if (dontunmap && munmap(s, size))
			die("unmap the kept source");
		if (!strcmp(cls, "blocked") && munmap((void *)(src - page), page))
			die("unmap guard page");
		if (fd >= 0)
			close(fd);
	}
	if (threads == 2) {
		atomic_store(&spin_stop, 1);
		pthread_join(th, NULL);
	}
	fflush(stdout);
	return 0;
}
