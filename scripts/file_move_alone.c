/* Time one growing, moving mremap of a sparsely read mapping, alone (no other work):
 * what sqlite_mmap's moves cost without the program around them (docs/real-programs.md,
 * "Mappings of files").
 *
 *   cc -O2 -o /tmp/file_move_alone scripts/file_move_alone.c
 *   /tmp/file_move_alone [-f] MIB KIND KIB [PATH]
 *
 * MIB: the mapping's size in MiB; KIND: 0 anonymous, 1 MAP_SHARED file read-write, 2
 * MAP_SHARED file read-only (as SQLite maps its database); KIB: how much of its head is
 * read (faulted in) first; PATH: the file (default /tmp/perfsim-file-move-alone.dat, made,
 * sized and removed here). The file is made once; with -f it is made afresh (O_TRUNC,
 * ftruncate) before each call, which frees and refills its page cache just before the
 * mremap, as a program that writes its file between calls does. A one-page mapping right
 * after the block keeps it from growing in place, so mremap(MREMAP_MAYMOVE) grows it by
 * 1757184 bytes (SQLite's step here) by moving it. Prints the median and least of 15
 * calls, each on a fresh mapping.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define REPS 15
#define GROWTH 1757184

static long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	const char *kinds[] = { "anon", "file rw", "file ro" };
	int fresh = argc > 1 && strcmp(argv[1], "-f") == 0;
	const char *path;
	long took[REPS];
	size_t len, grow, touch;
	int kind, fd = -1;

	argv += fresh;
	argc -= fresh;
	if (argc < 4) {
		fprintf(stderr, "usage: file_move_alone [-f] MIB KIND(0 anon, 1 file rw, 2 file "
			"ro) KIB [PATH]\n");
		return 2;
	}
	path = argc > 4 ? argv[4] : "/tmp/perfsim-file-move-alone.dat";
	len = (size_t)atol(argv[1]) << 20;
	kind = atoi(argv[2]);
	touch = (size_t)atol(argv[3]) << 10;
	grow = len + GROWTH;
	if (len == 0 || kind < 0 || kind > 2 || touch > len) {
		fprintf(stderr, "%s: MIB > 0, KIND 0..2, KIB at most the mapping\n", argv[0]);
		return 2;
	}
	for (int r = 0; r < REPS; r++) {
		char *p, *q, *block;
		volatile char sum = 0;
		long t0;

		/* room for the mapping and the page after it, then both in it */
		char *room = mmap(NULL, len + 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
				  -1, 0);

		if (room == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		if (kind && (fresh || fd < 0)) {
			if (fd >= 0)
				close(fd);
			fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
			if (fd < 0 || ftruncate(fd, grow)) {
				perror(path);
				return 1;
			}
		}
		if (kind) {
			p = mmap(room, len, PROT_READ | (kind == 1 ? PROT_WRITE : 0),
				 MAP_SHARED | MAP_FIXED, fd, 0);
		} else {
			p = mmap(room, len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		}
		block = mmap(room + len, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			     -1, 0);
		if (p == MAP_FAILED || block == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		for (size_t o = 0; o < touch; o += 4096)
			sum += p[o];
		t0 = now_ns();
		q = mremap(p, len, grow, MREMAP_MAYMOVE);
		took[r] = now_ns() - t0;
		if (q == MAP_FAILED) {
			perror("mremap");
			return 1;
		}
		munmap(q, grow);
		munmap(block, 4096);
	}
	if (kind) {
		close(fd);
		unlink(path);
	}
	qsort(took, REPS, sizeof(took[0]), by_value);
	printf("%zu MiB %s%s, first %zu KiB read: median %.1f us, least %.1f us (%d calls)\n",
	       len >> 20, kinds[kind], kind && fresh ? " made afresh" : "", touch >> 10,
	       took[REPS / 2] / 1e3, took[0] / 1e3, REPS);
	return 0;
}
