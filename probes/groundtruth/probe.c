/*
 * perfsim ground-truth probe: build mremap() layouts the way a program does, move them with
 * one mremap(MAYMOVE|FIXED) each, and print what the kernel's tracepoints saw.
 *
 * Built static (gcc -static -O2) for an initramfs, or dynamic for the "ordinary program"
 * layouts next to the C library on the host. perfsim.groundtruth builds and runs it; the
 * output is parsed by perfsim.groundtruth.records with perfsim.host.trace's parser.
 *
 * Input (stdin or the file named by argv[1]): one case per line, key=value tokens:
 *   id=NAME layout=window|ordinary size=BYTES src_off=BYTES dst_off=BYTES
 *   backing=anon|shmem|memfd|tmpfs|ext4 thp=on|off|default threads=1|2
 *   populate=full|none|every:K|first:BYTES guard_src=no|touched|untouched
 *   guard_dst=no|touched|untouched dst_mode=hole|reserved|written|anon-shmem reps=N
 *   new_size=BYTES (default size) flags=fixed|dontunmap|shrink|maymove|dontunmap-any
 *   split_at=OFFSET (0: none)
 *   sync=no|msync truncate=BYTES (-1: none) dontneed_off=BYTES dontneed_len=BYTES (0: none)
 * ``dst_mode=written``: the destination is a mapping of the source's backing (its own
 * shmem object or memfd), every page written, so MREMAP_FIXED first unmaps dirty pages;
 * ``anon-shmem``: the same with its lower half private anon and its upper half shmem.
 * ``split_at`` makes one page of the populated source read-only, so the range spans three
 * VMAs (a multi-VMA move on 6.17+, EFAULT before); ``dontunmap`` adds MREMAP_DONTUNMAP;
 * ``shrink`` calls mremap(src, size, new_size, 0) instead (new_size < size: the tail is
 * unmapped in place, nothing moves). The kernel picks the destination with ``maymove``, a
 * growth (new_size > size) past a one-page never-touched VMA the probe maps right after the
 * source, ``mremap(src, size, new_size, MREMAP_MAYMOVE)``, and with ``dontunmap-any``,
 * ``mremap(src, size, size, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL)``: the record's ``ret``
 * is where it went (run with -R, so that mmap_base is the same every run), and its
 * ``near_dst`` the present pages, taken after the call, of the VMAs around it. ``tmpfs`` and ``ext4``: a MAP_SHARED mapping of a new
 * file (created, unlinked, sized with ftruncate) in TMPFS_DIR or EXT4_DIR below, which must
 * be on that filesystem (checked with fstatfs; the case fails otherwise). ``sync=msync``
 * calls msync(src, size, MS_SYNC) after populating: a file's pages are written back and
 * their PTEs cleaned (write-protected, not dirty); shmem has no writeback (still dirty).
 * ``truncate=BYTES`` (memfd, tmpfs and ext4) calls ftruncate(fd, BYTES) on the source's file
 * after the layout is recorded and before the traced call, so the call finds what the
 * truncation left (the pages past the new end unmapped, their page tables kept); the
 * truncation itself is not traced. ``dontneed_len`` likewise calls madvise(src +
 * dontneed_off, dontneed_len, MADV_DONTNEED) after the layout is recorded: the call finds
 * the pages zapped, and the PTE tables the kernel freed (CONFIG_PT_RECLAIM) or kept.
 * "window": source at base+src_off and destination at base+span+1G+dst_off in a private
 * 1 GiB-aligned window (span = whole GiBs covering size+8M), everything else in the window
 * unmapped, as perfsim.host.layout builds its shapes. "ordinary": each buffer comes from
 * mmap(NULL, ...) in the process's normal mmap area, is aligned inside its allocation to a
 * PMD boundary plus the offset (mod 2 MiB), and the rest of the allocation is unmapped.
 *
 * Output (stdout), per measured call:
 *   @@PERFSIM-CASE-BEGIN <id> <rep>
 *   @@REC {json: the case, addresses, every VMA from /proc/self/maps, present pages ...}
 *   <the raw lines of /sys/kernel/tracing/trace recorded around the call>
 *   @@PERFSIM-CASE-END <id> <rep>
 * The record's ``call_ns`` is the call's CLOCK_MONOTONIC time (with tracing on, the traced
 * time; with -n, the call's own).
 * framed by @@PERFSIM-GRID-BEGIN {uname} and @@PERFSIM-GRID-END <cases>.
 *
 * Options: -T DIR tracefs root (default /sys/kernel/tracing); -n do not trace (layouts
 * only); -R run without address-space randomisation (the probe executes itself again with
 * ADDR_NO_RANDOMIZE, as ``setarch -R`` does; the header says ``randomized`` and the stack
 * rlimit, from which mmap_base follows). The probe enables the events and sets their filters itself; the caller saves and
 * restores tracefs around it (perfsim.host.trace.TlbTraceSession on the host; nothing to
 * restore in a throw-away VM).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#define KiB (1UL << 10)
#define MiB (1UL << 20)
#define GiB (1UL << 30)
#define PAGE 4096UL
#define PMD (2 * MiB)
#define WINDOW_HINT 0x300000000000UL
#define TMPFS_DIR "/dev/shm"
#define EXT4_DIR "/var/tmp"
#define TMPFS_MAGIC_ 0x01021994L
#define EXT4_MAGIC_ 0xEF53L

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 1U
#endif

static const char *tracefs = "/sys/kernel/tracing";
static int tracing = 1;

/* ---------------------------------------------------------------- small helpers */

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stdout, "@@PERFSIM-ERROR ");
	vfprintf(stdout, fmt, ap);
	fprintf(stdout, " (errno %d: %s)\n", errno, strerror(errno));
	va_end(ap);
	fflush(stdout);
	exit(1);
}

static int write_file(const char *rel, const char *val)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tracefs, rel);
	int fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, val, strlen(val));
	close(fd);
	return n < 0 ? -1 : 0;
}

static int exists(const char *rel)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tracefs, rel);
	return access(path, F_OK) == 0;
}

/* The trace text is read into one static buffer (in .bss, so it is no VMA of the mmap area
 * and does not change the layouts measured). */
#define TRACE_MAX (96UL * MiB)
static char trace_buf[TRACE_MAX];

static size_t read_whole(const char *path, char *buf, size_t max)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, max - 1 - len);
		if (n <= 0)
			break;
		len += n;
		if (len >= max - 1)
			break;
	}
	close(fd);
	buf[len] = 0;
	return len;
}

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof s, &s);
}

/* ---------------------------------------------------------------- the case description */

struct spec {
	char id[128];
	char layout[16];
	unsigned long size, src_off, dst_off;
	char backing[8];
	char thp[8];
	int threads;
	char populate[32];
	char guard_src[12], guard_dst[12];
	char dst_mode[12];
	int reps;
	unsigned long new_size, split_at;
	char flags[16];
	char sync[8];
	long truncate;
	unsigned long dontneed_off, dontneed_len;
};

static void spec_defaults(struct spec *s)
{
	memset(s, 0, sizeof *s);
	strcpy(s->layout, "window");
	strcpy(s->backing, "anon");
	strcpy(s->thp, "off");
	s->threads = 1;
	strcpy(s->populate, "full");
	strcpy(s->guard_src, "no");
	strcpy(s->guard_dst, "no");
	strcpy(s->dst_mode, "hole");
	s->reps = 1;
	s->size = 64 * MiB;
	strcpy(s->flags, "fixed");
	strcpy(s->sync, "no");
	s->truncate = -1;
}

static void copy_tok(char *dst, size_t cap, const char *v, const char *key)
{
	if (strlen(v) >= cap) {
		errno = EINVAL;
		die("value of %s too long: %s", key, v);
	}
	strcpy(dst, v);
}

static int parse_spec(char *line, struct spec *s)
{
	spec_defaults(s);
	int any = 0;
	for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
		if (tok[0] == '#')
			break;
		char *eq = strchr(tok, '=');
		if (!eq) {
			errno = EINVAL;
			die("token without '=': %s", tok);
		}
		*eq = 0;
		const char *k = tok, *v = eq + 1;
		any = 1;
		if (!strcmp(k, "id")) copy_tok(s->id, sizeof s->id, v, k);
		else if (!strcmp(k, "layout")) copy_tok(s->layout, sizeof s->layout, v, k);
		else if (!strcmp(k, "size")) s->size = strtoul(v, NULL, 0);
		else if (!strcmp(k, "src_off")) s->src_off = strtoul(v, NULL, 0);
		else if (!strcmp(k, "dst_off")) s->dst_off = strtoul(v, NULL, 0);
		else if (!strcmp(k, "backing")) copy_tok(s->backing, sizeof s->backing, v, k);
		else if (!strcmp(k, "thp")) copy_tok(s->thp, sizeof s->thp, v, k);
		else if (!strcmp(k, "threads")) s->threads = atoi(v);
		else if (!strcmp(k, "populate")) copy_tok(s->populate, sizeof s->populate, v, k);
		else if (!strcmp(k, "guard_src")) copy_tok(s->guard_src, sizeof s->guard_src, v, k);
		else if (!strcmp(k, "guard_dst")) copy_tok(s->guard_dst, sizeof s->guard_dst, v, k);
		else if (!strcmp(k, "dst_mode")) copy_tok(s->dst_mode, sizeof s->dst_mode, v, k);
		else if (!strcmp(k, "reps")) s->reps = atoi(v);
		else if (!strcmp(k, "new_size")) s->new_size = strtoul(v, NULL, 0);
		else if (!strcmp(k, "split_at")) s->split_at = strtoul(v, NULL, 0);
		else if (!strcmp(k, "flags")) copy_tok(s->flags, sizeof s->flags, v, k);
		else if (!strcmp(k, "sync")) copy_tok(s->sync, sizeof s->sync, v, k);
		else if (!strcmp(k, "truncate")) s->truncate = strtol(v, NULL, 0);
		else if (!strcmp(k, "dontneed_off")) s->dontneed_off = strtoul(v, NULL, 0);
		else if (!strcmp(k, "dontneed_len")) s->dontneed_len = strtoul(v, NULL, 0);
		else {
			errno = EINVAL;
			die("unknown key %s", k);
		}
	}
	if (!s->new_size)
		s->new_size = s->size;
	if (any && (!s->id[0] || !s->size || s->size % PAGE || s->threads < 1 || s->threads > 2 ||
		    s->new_size % PAGE || s->split_at % PAGE || s->split_at >= s->size ||
		    (strcmp(s->flags, "fixed") && strcmp(s->flags, "dontunmap") &&
		     strcmp(s->flags, "shrink") && strcmp(s->flags, "maymove") &&
		     strcmp(s->flags, "dontunmap-any")) ||
		    (!strcmp(s->flags, "shrink") && s->new_size >= s->size) ||
		    (!strcmp(s->flags, "maymove") && s->new_size <= s->size) ||
		    (!strcmp(s->flags, "dontunmap-any") && s->new_size != s->size) ||
		    (strcmp(s->sync, "no") && strcmp(s->sync, "msync")) || s->truncate < -1 ||
		    (s->truncate >= 0 && (!strcmp(s->backing, "anon") || !strcmp(s->backing, "shmem"))) ||
		    s->dontneed_off % PAGE || s->dontneed_len % PAGE ||
		    s->dontneed_off + s->dontneed_len > s->size)) {
		errno = EINVAL;
		die("bad case %s: needs id, page-multiple size/new_size/split_at < size, threads 1 or 2, "
		    "flags fixed, dontunmap, shrink (new_size < size), maymove (new_size > size) or "
		    "dontunmap-any (new_size = size), sync no or msync, truncate -1 "
		    "or a size (memfd, tmpfs or ext4 only), page-multiple dontneed_off/len "
		    "inside size", s->id);
	}
	return any;
}

/* ---------------------------------------------------------------- the spinner thread */

static volatile int spin_stop;
static volatile unsigned long spin_count;
static volatile pid_t spin_tid;

static void *spinner(void *arg)
{
	(void)arg;
	pin(1);
	spin_tid = gettid_();
	setpriority(PRIO_PROCESS, spin_tid, -20);
	while (!spin_stop)
		spin_count++;
	return NULL;
}

static void wait_spinner_running(void)
{
	unsigned long c0 = spin_count;
	for (long i = 0; i < 200000000L && spin_count == c0; i++)
		sched_yield();
}

/* ---------------------------------------------------------------- tracing */

static const char *EVENTS[] = {"tlb/tlb_flush", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit",
			       "maple_tree/ma_write"};

static int setup_tracing(pid_t tid)
{
	char f[128], rel[128];
	if (!exists("events/tlb/tlb_flush") || !exists("events/raw_syscalls/sys_enter"))
		return -1;
	write_file("tracing_on", "0");
	write_file("trace_clock", "mono");
	write_file("buffer_size_kb", "16384");
	snprintf(f, sizeof f, "id == %d && common_pid == %d", (int)SYS_mremap, (int)tid);
	write_file("events/raw_syscalls/sys_enter/filter", f);
	write_file("events/raw_syscalls/sys_exit/filter", f);
	if (exists("events/maple_tree/ma_write")) {
		snprintf(f, sizeof f, "common_pid == %d", (int)tid);
		write_file("events/maple_tree/ma_write/filter", f);
	}
	for (unsigned i = 0; i < sizeof EVENTS / sizeof *EVENTS; i++) {
		snprintf(rel, sizeof rel, "events/%s/enable", EVENTS[i]);
		if (exists(rel))
			write_file(rel, "1");
	}
	write_file("trace", "");
	write_file("tracing_on", "1");
	return 0;
}

/* ---------------------------------------------------------------- layouts */

struct layout {
	unsigned long src, dst, size;
	unsigned long guard_src, guard_dst; /* address of the one-page VMA, or 0 */
	int fd, dst_fd;
	unsigned long blocker; /* flags=maymove: the one-page VMA right after the source, or 0 */
};

static void *map_at(unsigned long addr, unsigned long len, int prot, int flags, int fd)
{
	void *p = mmap((void *)addr, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap(%#lx, %#lx)", addr, len);
	return p;
}

/* A read-write mapping of the case's backing at ``at`` (a new shmem object or memfd). */
static void map_backing(const struct spec *s, unsigned long at, int *fd)
{
	int prot = PROT_READ | PROT_WRITE;
	if (!strcmp(s->backing, "anon"))
		map_at(at, s->size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1);
	else if (!strcmp(s->backing, "shmem"))
		map_at(at, s->size, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1);
	else if (!strcmp(s->backing, "memfd")) {
		*fd = (int)syscall(SYS_memfd_create, "perfsim-probe", MFD_CLOEXEC);
		if (*fd < 0 || ftruncate(*fd, (off_t)s->size))
			die("memfd_create/ftruncate");
		map_at(at, s->size, prot, MAP_SHARED | MAP_FIXED, *fd);
	} else if (!strcmp(s->backing, "tmpfs") || !strcmp(s->backing, "ext4")) {
		int tmpfs = !strcmp(s->backing, "tmpfs");
		char path[256];
		static unsigned serial;
		snprintf(path, sizeof path, "%s/perfsim-probe-%d-%u", tmpfs ? TMPFS_DIR : EXT4_DIR,
			 (int)getpid(), serial++);
		*fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (*fd < 0)
			die("open %s", path);
		unlink(path);
		struct statfs sf;
		if (fstatfs(*fd, &sf) || (long)sf.f_type != (tmpfs ? TMPFS_MAGIC_ : EXT4_MAGIC_)) {
			errno = EINVAL;
			die("backing %s: %s is not on %s", s->backing, path, s->backing);
		}
		if (ftruncate(*fd, (off_t)s->size))
			die("ftruncate %s", path);
		map_at(at, s->size, prot, MAP_SHARED | MAP_FIXED, *fd);
	} else {
		errno = EINVAL;
		die("backing must be anon, shmem, memfd, tmpfs or ext4: %s", s->backing);
	}
}

/* flags=maymove and dontunmap-any: the kernel chooses the destination (l->dst is unused). */
static int kernel_picks(const struct spec *s)
{
	return !strcmp(s->flags, "maymove") || !strcmp(s->flags, "dontunmap-any");
}

static void map_source(const struct spec *s, struct layout *l, unsigned long at)
{
	map_backing(s, at, &l->fd);
	l->src = at;
}

/* dst_mode=written: the destination mapped like the source (its own object);
 * dst_mode=anon-shmem: its lower half private anon, its upper half shmem */
static int dst_written(const struct spec *s)
{
	if (!strcmp(s->dst_mode, "written") || !strcmp(s->dst_mode, "anon-shmem"))
		return 1;
	if (strcmp(s->dst_mode, "hole") && strcmp(s->dst_mode, "reserved")) {
		errno = EINVAL;
		die("dst_mode must be hole, reserved, written or anon-shmem: %s", s->dst_mode);
	}
	return 0;
}

static void map_destination(const struct spec *s, struct layout *l)
{
	if (strcmp(s->dst_mode, "anon-shmem")) {
		map_backing(s, l->dst, &l->dst_fd);
		return;
	}
	int prot = PROT_READ | PROT_WRITE;
	unsigned long half = s->size / 2 & ~(PAGE - 1);
	map_at(l->dst, half, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1);
	map_at(l->dst + half, s->size - half, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1);
}

static void place_guard(const char *mode, unsigned long at, unsigned long *where)
{
	if (!strcmp(mode, "no"))
		return;
	map_at(at, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1);
	*where = at;
}

/* flags=maymove: a never-touched read-only page right after the source, so that the growth
 * cannot happen in place and the kernel must pick a new range. */
static void place_blocker(const struct spec *s, struct layout *l)
{
	if (strcmp(s->flags, "maymove"))
		return;
	l->blocker = l->src + s->size;
	map_at(l->blocker, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1);
}

static void touch_guard(const char *mode, unsigned long at)
{
	if (at && !strcmp(mode, "touched"))
		(void)*(volatile char *)at; /* read fault: the zero page, as a program reading it */
}

static void unmap_gaps(unsigned long lo, unsigned long hi, unsigned long *keep, int nkeep)
{
	/* keep[] holds (addr, len) pairs sorted by addr */
	unsigned long pos = lo;
	for (int i = 0; i < nkeep; i++) {
		unsigned long a = keep[2 * i], n = keep[2 * i + 1];
		if (a > pos)
			munmap((void *)pos, a - pos);
		if (a + n > pos)
			pos = a + n;
	}
	if (hi > pos)
		munmap((void *)pos, hi - pos);
}

static void sort_pairs(unsigned long *k, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && k[2 * j] < k[2 * j - 2]; j--) {
			unsigned long a = k[2 * j], b = k[2 * j + 1];
			k[2 * j] = k[2 * j - 2];
			k[2 * j + 1] = k[2 * j - 1];
			k[2 * j - 2] = a;
			k[2 * j - 1] = b;
		}
}

static void build_window(const struct spec *s, struct layout *l)
{
	unsigned long span = (s->size + 8 * MiB + GiB - 1) / GiB * GiB;
	unsigned long total = 2 * span + GiB;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	void *p = mmap((void *)WINDOW_HINT, total + GiB, PROT_NONE, flags | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED)
		p = map_at(0, total + GiB, PROT_NONE, flags, -1);
	unsigned long raw = (unsigned long)p, base = (raw + GiB - 1) & ~(GiB - 1);
	if (base > raw)
		munmap(p, base - raw);
	if (raw + total + GiB > base + total)
		munmap((void *)(base + total), raw + total + GiB - (base + total));
	map_source(s, l, base + s->src_off);
	l->dst = base + span + GiB + s->dst_off;
	if (dst_written(s))
		map_destination(s, l);
	place_guard(s->guard_src, l->src - PAGE, &l->guard_src);
	place_guard(s->guard_dst, l->dst - PAGE, &l->guard_dst);
	place_blocker(s, l);
	unsigned long keep[10];
	int n = 0;
	keep[2 * n] = l->src, keep[2 * n + 1] = s->size + (l->blocker ? PAGE : 0), n++;
	if (l->guard_src)
		keep[2 * n] = l->guard_src, keep[2 * n + 1] = PAGE, n++;
	if (l->guard_dst)
		keep[2 * n] = l->guard_dst, keep[2 * n + 1] = PAGE, n++;
	if (!strcmp(s->dst_mode, "reserved") || dst_written(s))
		keep[2 * n] = l->dst, keep[2 * n + 1] = s->size, n++;
	sort_pairs(keep, n);
	unmap_gaps(base, base + total, keep, n);
}

/* An allocation from the ordinary mmap area with room for a guard page, a PMD boundary and
 * the offset; returns the aligned start and trims the rest of the allocation away. */
static unsigned long ordinary_region(unsigned long size, unsigned long off, unsigned long *alloc_lo,
				     unsigned long *alloc_hi)
{
	unsigned long len = size + 2 * PMD + 2 * PAGE;
	void *p = map_at(0, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	unsigned long lo = (unsigned long)p;
	unsigned long a = ((lo + PAGE + PMD - 1) & ~(PMD - 1)) + (off % PMD);
	*alloc_lo = lo;
	*alloc_hi = lo + len;
	return a;
}

static void build_ordinary(const struct spec *s, struct layout *l)
{
	unsigned long slo, shi, dlo, dhi;
	unsigned long src = ordinary_region(s->size, s->src_off, &slo, &shi);
	unsigned long dst = ordinary_region(s->size, s->dst_off, &dlo, &dhi);
	map_source(s, l, src);
	l->dst = dst;
	if (dst_written(s))
		map_destination(s, l);
	place_guard(s->guard_src, l->src - PAGE, &l->guard_src);
	place_guard(s->guard_dst, l->dst - PAGE, &l->guard_dst);
	place_blocker(s, l);
	unsigned long keep[4];
	int n = 0;
	keep[2 * n] = l->src, keep[2 * n + 1] = s->size + (l->blocker ? PAGE : 0), n++;
	if (l->guard_src)
		keep[0] = l->guard_src, keep[1] += PAGE;
	unmap_gaps(slo, shi, keep, n);
	n = 0;
	if (!strcmp(s->dst_mode, "reserved") || dst_written(s))
		keep[2 * n] = l->dst, keep[2 * n + 1] = s->size, n++;
	if (l->guard_dst) {
		if (n)
			keep[0] = l->guard_dst, keep[1] = s->size + PAGE;
		else
			keep[0] = l->guard_dst, keep[1] = PAGE, n = 1;
	}
	unmap_gaps(dlo, dhi, keep, n);
}

static void populate(const struct spec *s, const struct layout *l)
{
	volatile char *b = (volatile char *)l->src;
	unsigned long pages = s->size / PAGE, step = 1, limit = pages;
	if (!strcmp(s->populate, "none"))
		return;
	if (!strncmp(s->populate, "every:", 6))
		step = strtoul(s->populate + 6, NULL, 0);
	else if (!strncmp(s->populate, "first:", 6))
		limit = strtoul(s->populate + 6, NULL, 0) / PAGE;
	else if (strcmp(s->populate, "full")) {
		errno = EINVAL;
		die("populate must be full, none, every:K or first:BYTES: %s", s->populate);
	}
	if (!step || limit > pages) {
		errno = EINVAL;
		die("bad populate %s", s->populate);
	}
	/* a loop over the buffer, as a program writes it: page 0, step, 2*step, ... */
	for (unsigned long i = 0; i < limit; i += step)
		b[i * PAGE] = (char)i;
	if (dst_written(s)) {
		volatile char *d = (volatile char *)l->dst;
		for (unsigned long i = 0; i < pages; i++)
			d[i * PAGE] = (char)i; /* every page of the destination, written */
	}
}

/* ---------------------------------------------------------------- what the mm looks like */

static int pagemap_fd = -1;

/* pagemap entries are read 512 at a time (one PMD's worth) */
static uint64_t pm_cache[512];
static unsigned long pm_base = 1;

static int page_info(unsigned long addr, int *present, unsigned long *pfn)
{
	unsigned long slot = addr & ~(PMD - 1);
	if (slot != pm_base) {
		memset(pm_cache, 0, sizeof pm_cache);
		if (pread(pagemap_fd, pm_cache, sizeof pm_cache, (off_t)(slot / PAGE * 8)) < 0)
			return -1;
		pm_base = slot;
	}
	uint64_t e = pm_cache[(addr - slot) / PAGE];
	*present = (int)(e >> 63);
	*pfn = (unsigned long)(e & ((1ULL << 55) - 1));
	return 0;
}

/* Runs of present pages in [lo, hi) as [a, b) pairs; PMD slots fully inside [vlo, vhi) whose
 * 512 pages are present and physically contiguous from a 2 MiB-aligned frame (what a PMD
 * mapping of one THP looks like) as candidates. */
static void emit_presence(unsigned long lo, unsigned long hi, unsigned long vlo, unsigned long vhi)
{
	printf("\"present\":[");
	int first = 1, run = 0;
	unsigned long run_start = 0;
	for (unsigned long a = lo; a < hi; a += PAGE) {
		int p = 0;
		unsigned long pfn;
		if (page_info(a, &p, &pfn))
			p = 0;
		if (p && !run)
			run = 1, run_start = a;
		if (!p && run) {
			printf("%s[%lu,%lu]", first ? "" : ",", run_start, a);
			first = 0, run = 0;
		}
	}
	if (run)
		printf("%s[%lu,%lu]", first ? "" : ",", run_start, hi);
	printf("],\"pmd_candidates\":[");
	first = 1;
	for (unsigned long a = (vlo + PMD - 1) & ~(PMD - 1); a + PMD <= vhi; a += PMD) {
		if (a < lo || a + PMD > hi)
			continue;
		int ok = 1, p;
		unsigned long pfn0 = 0, pfn;
		for (unsigned long i = 0; i < 512 && ok; i++) {
			if (page_info(a + i * PAGE, &p, &pfn) || !p)
				ok = 0;
			else if (i == 0)
				pfn0 = pfn, ok = pfn0 != 0 && pfn0 % 512 == 0;
			else if (pfn != pfn0 + i)
				ok = 0;
		}
		if (ok) {
			printf("%s%lu", first ? "" : ",", a);
			first = 0;
		}
	}
	printf("]");
}

static unsigned long smaps_huge_kb(unsigned long start)
{
	static char buf[4 * MiB];
	read_whole("/proc/self/smaps", buf, sizeof buf);
	char want[32];
	snprintf(want, sizeof want, "%lx-", start);
	unsigned long kb = 0;
	int in = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char *dash = strchr(line, '-');
		int header = dash && dash > line && strchr(line, ' ') > dash &&
			     strspn(line, "0123456789abcdef") == (size_t)(dash - line);
		if (header) {
			if (in)
				break;
			in = !strncmp(line, want, strlen(want));
			continue;
		}
		unsigned long v;
		if (in && (sscanf(line, "AnonHugePages: %lu kB", &v) == 1 ||
			   sscanf(line, "ShmemPmdMapped: %lu kB", &v) == 1 ||
			   sscanf(line, "FilePmdMapped: %lu kB", &v) == 1))
			kb += v;
	}
	return kb;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* The present pages of the VMA [lo, hi) inside [a, b), and its PMD-mapped THP size. */
static void emit_window(unsigned long lo, unsigned long hi, unsigned long a, unsigned long b)
{
	printf("\"present_window\":[%lu,%lu],", a, b);
	emit_presence(a, b, lo, hi);
	printf(",\"huge_kb\":%lu", smaps_huge_kb(lo));
}

/* Every VMA of the process; the present pages of the ones that share a PMD with the source
 * or the destination (the source included). */
static void emit_vmas(const struct layout *l)
{
	static char maps[1 * MiB];
	read_whole("/proc/self/maps", maps, sizeof maps);
	pm_base = 1; /* presence changes between cases */
	unsigned long zlo[2] = {(l->src & ~(PMD - 1)) - PMD, (l->dst & ~(PMD - 1)) - PMD};
	unsigned long zhi[2] = {((l->src + l->size + PMD - 1) & ~(PMD - 1)) + PMD,
				((l->dst + l->size + PMD - 1) & ~(PMD - 1)) + PMD};
	printf("\"vmas\":[");
	int first = 1;
	char *save = NULL;
	for (char *line = strtok_r(maps, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long lo, hi, off, inode;
		char perms[8], dev[16];
		int pos = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &lo, &hi, perms, &off, dev, &inode, &pos) < 6)
			continue;
		const char *path = pos ? line + pos : "";
		while (*path == ' ')
			path++;
		printf("%s{\"start\":%lu,\"end\":%lu,\"perms\":\"%s\",\"offset\":%lu,\"inode\":%lu,\"path\":",
		       first ? "" : ",", lo, hi, perms, off, inode);
		json_str(path);
		first = 0;
		for (int z = 0; z < 2; z++) {
			unsigned long a = lo > zlo[z] ? lo : zlo[z], b = hi < zhi[z] ? hi : zhi[z];
			if (a < b) {
				printf(",");
				emit_window(lo, hi, a, b);
				break;
			}
		}
		printf("}");
	}
	printf("]");
}

/* flags=maymove and dontunmap-any: the presence of the VMAs around where the kernel put the
 * range (unknown before the call), taken after it, leaving out the moved range and the
 * source; the call does not change them. */
static void emit_near_destination(unsigned long ret, unsigned long len, unsigned long src,
				  unsigned long size)
{
	static char maps[1 * MiB];
	read_whole("/proc/self/maps", maps, sizeof maps);
	pm_base = 1;
	unsigned long zlo = (ret & ~(PMD - 1)) - PMD, zhi = ((ret + len + PMD - 1) & ~(PMD - 1)) + PMD;
	printf(",\"near_dst\":[");
	int first = 1;
	char *save = NULL;
	for (char *line = strtok_r(maps, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) < 2)
			continue;
		if ((lo < ret + len && hi > ret) || (lo < src + size && hi > src))
			continue;
		unsigned long a = lo > zlo ? lo : zlo, b = hi < zhi ? hi : zhi;
		if (a >= b)
			continue;
		printf("%s{\"start\":%lu,\"end\":%lu,", first ? "" : ",", lo, hi);
		emit_window(lo, hi, a, b);
		printf("}");
		first = 0;
	}
	printf("]");
}

/* ---------------------------------------------------------------- one measured call */

/* Two tiny moves before the call so that CPUs that ran this mm earlier leave mm_cpumask
 * now and not during the call (perfsim.host.measure.settle_cpumask does the same). */
static void settle_cpumask(void)
{
	char *b = map_at(0, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	madvise(b, 2 * PAGE, MADV_NOHUGEPAGE);
	b[0] = 1;
	mremap(b, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, b + PAGE);
	mremap(b + PAGE, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, b);
	munmap(b, 2 * PAGE);
}

static void cleanup(const struct spec *s, struct layout *l, unsigned long ret)
{
	munmap((void *)l->src, s->size);
	if (kernel_picks(s)) {
		if (ret)
			munmap((void *)ret, s->new_size);
	} else
		munmap((void *)l->dst, s->new_size > s->size ? s->new_size : s->size);
	if (l->blocker)
		munmap((void *)l->blocker, PAGE);
	if (l->guard_src)
		munmap((void *)l->guard_src, PAGE);
	if (l->guard_dst)
		munmap((void *)l->guard_dst, PAGE);
	if (l->fd >= 0)
		close(l->fd);
	if (l->dst_fd >= 0)
		close(l->dst_fd);
}

static void run_case(const struct spec *s, int rep, pid_t tid)
{
	struct layout l = {0, 0, s->size, 0, 0, -1, -1, 0};
	if (!strcmp(s->layout, "window"))
		build_window(s, &l);
	else if (!strcmp(s->layout, "ordinary"))
		build_ordinary(s, &l);
	else {
		errno = EINVAL;
		die("layout must be window or ordinary: %s", s->layout);
	}
	for (int i = 0; i < 1 + dst_written(s); i++) {
		void *at = (void *)(i ? l.dst : l.src);
		if (!strcmp(s->thp, "on"))
			madvise(at, s->size, MADV_HUGEPAGE);
		else if (!strcmp(s->thp, "off"))
			madvise(at, s->size, MADV_NOHUGEPAGE);
	}
	populate(s, &l);
	if (!strcmp(s->sync, "msync") && msync((void *)l.src, s->size, MS_SYNC))
		die("msync");
	if (s->split_at && mprotect((void *)(l.src + s->split_at), PAGE, PROT_READ))
		die("mprotect(split_at)");
	touch_guard(s->guard_src, l.guard_src);
	touch_guard(s->guard_dst, l.guard_dst);

	printf("@@PERFSIM-CASE-BEGIN %s %d\n@@REC {\"id\":", s->id, rep);
	json_str(s->id);
	printf(",\"rep\":%d,\"layout\":\"%s\",\"size\":%lu,\"src_off\":%lu,\"dst_off\":%lu,"
	       "\"backing\":\"%s\",\"thp\":\"%s\",\"threads\":%d,\"populate\":\"%s\","
	       "\"guard_src\":\"%s\",\"guard_dst\":\"%s\",\"dst_mode\":\"%s\",\"src\":%lu,\"dst\":%lu,"
	       "\"guard_src_addr\":%lu,\"guard_dst_addr\":%lu,\"tid\":%d,\"new_size\":%lu,"
	       "\"split_at\":%lu,\"flags\":\"%s\",\"sync\":\"%s\",\"truncate\":%ld,",
	       rep, s->layout, s->size, s->src_off, s->dst_off, s->backing, s->thp, s->threads,
	       s->populate, s->guard_src, s->guard_dst, s->dst_mode, l.src, l.dst, l.guard_src,
	       l.guard_dst, (int)tid, s->new_size, s->split_at, s->flags, s->sync, s->truncate);
	if (s->dontneed_len)
		printf("\"dontneed_off\":%lu,\"dontneed_len\":%lu,", s->dontneed_off,
		       s->dontneed_len);
	emit_vmas(&l);
	fflush(stdout);
	if (s->truncate >= 0 && ftruncate(l.fd, (off_t)s->truncate))
		die("ftruncate(source, %ld)", s->truncate);
	if (s->dontneed_len &&
	    madvise((void *)(l.src + s->dontneed_off), s->dontneed_len, MADV_DONTNEED))
		die("madvise(source + %lu, %lu, MADV_DONTNEED)", s->dontneed_off, s->dontneed_len);

	if (s->threads == 2)
		wait_spinner_running();
	else
		settle_cpumask();
	if (tracing)
		write_file("trace", "");
	int mflags = MREMAP_MAYMOVE | MREMAP_FIXED;
	void *to = (void *)l.dst;
	if (!strcmp(s->flags, "dontunmap"))
		mflags |= 4; /* MREMAP_DONTUNMAP */
	else if (!strcmp(s->flags, "maymove"))
		mflags = MREMAP_MAYMOVE;
	else if (!strcmp(s->flags, "dontunmap-any"))
		mflags = MREMAP_MAYMOVE | 4, to = NULL;
	int shrink = !strcmp(s->flags, "shrink");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	void *r = shrink ? mremap((void *)l.src, s->size, s->new_size, 0)
			 : mremap((void *)l.src, s->size, s->new_size, mflags, to);
	int err = r == MAP_FAILED ? errno : 0;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long call_ns = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
	size_t n = 0;
	if (tracing) {
		char path[512];
		snprintf(path, sizeof path, "%s/trace", tracefs);
		n = read_whole(path, trace_buf, TRACE_MAX);
	}
	printf(",\"ret\":%ld,\"errno\":%d,\"spinner_tid\":%d,\"trace_truncated\":%s,"
	       "\"call_ns\":%ld",
	       r == MAP_FAILED ? -1L : (long)r, err, s->threads == 2 ? (int)spin_tid : 0,
	       n >= TRACE_MAX - 1 ? "true" : "false", call_ns);
	if (kernel_picks(s) && r != MAP_FAILED)
		emit_near_destination((unsigned long)r, s->new_size, l.src, s->size);
	printf("}\n");
	if (tracing) {
		char *save = NULL;
		for (char *line = strtok_r(trace_buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			if (line[0] != '#')
				puts(line);
	}
	printf("@@PERFSIM-CASE-END %s %d\n", s->id, rep);
	fflush(stdout);
	cleanup(s, &l, r == MAP_FAILED ? 0 : (unsigned long)r);
}

int main(int argc, char **argv)
{
	int opt;
	int norandom = 0;
	while ((opt = getopt(argc, argv, "T:nR")) != -1) {
		if (opt == 'T')
			tracefs = optarg;
		else if (opt == 'n')
			tracing = 0;
		else if (opt == 'R')
			norandom = 1;
		else {
			fprintf(stderr, "usage: %s [-T tracefs] [-n] [-R] [grid-file]\n", argv[0]);
			return 2;
		}
	}
	int persona = personality(0xffffffff);
	if (norandom && persona != -1 && !(persona & ADDR_NO_RANDOMIZE)) {
		/* the layout of an exec'd image is fixed at exec: run again without randomisation */
		if (personality((unsigned long)persona | ADDR_NO_RANDOMIZE) == -1)
			die("personality(ADDR_NO_RANDOMIZE)");
		execv("/proc/self/exe", argv);
		die("execv /proc/self/exe");
	}
	FILE *in = stdin;
	if (optind < argc && !(in = fopen(argv[optind], "r")))
		die("open %s", argv[optind]);
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap_fd < 0)
		die("open /proc/self/pagemap");
	pin(0);
	pid_t tid = gettid_();
	setpriority(PRIO_PROCESS, tid, -20);
	struct utsname u;
	uname(&u);
	printf("@@PERFSIM-GRID-BEGIN {\"release\":");
	json_str(u.release);
	printf(",\"version\":");
	json_str(u.version);
	printf(",\"machine\":");
	json_str(u.machine);
	printf(",\"ncpus\":%ld", sysconf(_SC_NPROCESSORS_ONLN));
	static char va[16];
	read_whole("/proc/sys/kernel/randomize_va_space", va, sizeof va);
	struct rlimit stack;
	getrlimit(RLIMIT_STACK, &stack);
	printf(",\"randomized\":%s,\"stack_rlimit\":%ld",
	       (personality(0xffffffff) & ADDR_NO_RANDOMIZE) || va[0] == '0' ? "false" : "true",
	       stack.rlim_cur == RLIM_INFINITY ? -1L : (long)stack.rlim_cur);
	static char thp[256];
	const char *thp_files[2][2] = {{"thp_enabled", "/sys/kernel/mm/transparent_hugepage/enabled"},
				       {"thp_shmem_enabled", "/sys/kernel/mm/transparent_hugepage/shmem_enabled"}};
	for (int i = 0; i < 2; i++) {
		read_whole(thp_files[i][1], thp, sizeof thp);
		thp[strcspn(thp, "\n")] = 0;
		printf(",\"%s\":", thp_files[i][0]);
		json_str(thp);
	}
	printf("}\n");
	if (!tracing)
		printf("@@PERFSIM-NOTRACE untraced (-n): call_ns is the call's own time\n");
	if (tracing && setup_tracing(tid)) {
		printf("@@PERFSIM-NOTRACE tracefs events missing under %s\n", tracefs);
		tracing = 0;
	}
	pthread_t th;
	int spinning = 0;
	char line[1024];
	int cases = 0;
	while (fgets(line, sizeof line, in)) {
		struct spec s;
		if (!parse_spec(line, &s))
			continue;
		if (s.threads == 2 && !spinning) {
			spin_stop = 0;
			if (pthread_create(&th, NULL, spinner, NULL))
				die("pthread_create");
			spinning = 1;
			while (!spin_tid)
				sched_yield();
		} else if (s.threads == 1 && spinning) {
			spin_stop = 1;
			pthread_join(th, NULL);
			spinning = 0;
			spin_tid = 0;
		}
		for (int rep = 0; rep < s.reps; rep++)
			run_case(&s, rep, tid);
		cases++;
	}
	if (spinning) {
		spin_stop = 1;
		pthread_join(th, NULL);
	}
	if (tracing)
		write_file("tracing_on", "0");
	printf("@@PERFSIM-GRID-END %d\n", cases);
	return 0;
}
