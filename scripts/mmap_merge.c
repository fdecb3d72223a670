/* Does a new mapping become part of a neighbour it continues, and does a written one share
 * its neighbour's anon_vma? Fifteen layouts of two or three 4-page mappings side by side
 * (MAP_FIXED, each case in its own slot of a PROT_NONE reservation, two guard pages before
 * it); prints, per case, the number of VMAs /proc/self/maps shows over the pages it counts
 * (tests/test_mmap_merge.py replays the same calls through
 * perfsim.workload.generate.StatefulPlanner, whose mmap rows go through
 * perfsim.planner.syscall.mmap_region and whose first writes through anon_vma_prepare,
 * and compares):
 *   left          anon, then anon right after it
 *   right         anon, then anon right before it
 *   both          anon at 0 and 8, then anon at 4 between them
 *   both_faulted  the same, both outer ones written first (two anon_vmas)
 *   left_faulted  the same, only the first written
 *   prot          read-write, then read-only after it
 *   noreserve     read-write, then read-write MAP_NORESERVE after it
 *   shared_anon   two MAP_SHARED|MAP_ANONYMOUS (each its own shmem file)
 *   file_next     one file MAP_PRIVATE read-only at offsets 0 and 4 pages
 *   file_same     the same file at offset 0 twice
 *   file_shared   one file MAP_SHARED read-write at offsets 0 and 4 pages
 * The last four share an anon_vma or not (find_mergeable_anon_vma at the first write), seen
 * through an mprotect that makes the two prots equal, which merges them only if they share:
 *   exec_prev     read-write written, then read-write-exec after it written; mprotect that
 *                 read-write
 *   exec_next     the same, the read-write-exec one before the other
 *   exec_apart    read-write written, read-write-exec 8 pages on written, then read-write-exec
 *                 between them (merged into the second); mprotect the second and third
 *                 read-write
 *   exec_between  read-write at 0 and 8 written, read-write-exec at 4 written, mprotect it
 *                 read-write: counted over pages 0-8 (it shares with the one after it)
 *   cc -O2 -o /tmp/mmap_merge scripts/mmap_merge.c && /tmp/mmap_merge
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>

#define P 4096UL
#define SLOT (16 * P)
#define RW (PROT_READ | PROT_WRITE)
#define RWX (PROT_READ | PROT_WRITE | PROT_EXEC)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static int vmas(char *lo, char *hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	if (!f) {
		perror("/proc/self/maps");
		exit(1);
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;

		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && b > (unsigned long)lo &&
		    a < (unsigned long)hi)
			n++;
	}
	fclose(f);
	return n;
}

static char *map(char *at, int prot, int flags, int fd, unsigned long off)
{
	char *p = mmap(at, 4 * P, prot, flags | MAP_FIXED, fd, off);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

static void protect(char *at, unsigned long len, int prot)
{
	if (mprotect(at, len, prot)) {
		perror("mprotect");
		exit(1);
	}
}

static char *anon(char *at, int prot, int extra)
{
	return map(at, prot, ANON | extra, -1, 0);
}

int main(void)
{
	char *area = mmap(NULL, 15 * SLOT, PROT_NONE, ANON, -1, 0), *s;
	FILE *tmp = tmpfile();
	int fd;

	if (area == MAP_FAILED || !tmp) {
		perror("setup");
		return 1;
	}
	fd = fileno(tmp);
	if (ftruncate(fd, 8 * P)) {
		perror("ftruncate");
		return 1;
	}
	/* (case i starts at slot i + 2 pages: PROT_NONE pages on both sides of it) */
#define AT(i) (area + (i) * SLOT + 2 * P)
	s = AT(0);
	anon(s, RW, 0);
	anon(s + 4 * P, RW, 0);
	printf("left %d\n", vmas(s, s + 8 * P));

	s = AT(1);
	anon(s + 4 * P, RW, 0);
	anon(s, RW, 0);
	printf("right %d\n", vmas(s, s + 8 * P));

	s = AT(2);
	anon(s, RW, 0);
	anon(s + 8 * P, RW, 0);
	anon(s + 4 * P, RW, 0);
	printf("both %d\n", vmas(s, s + 12 * P));

	s = AT(3);
	anon(s, RW, 0)[0] = 1;
	anon(s + 8 * P, RW, 0)[0] = 1;
	anon(s + 4 * P, RW, 0);
	printf("both_faulted %d\n", vmas(s, s + 12 * P));

	s = AT(4);
	anon(s, RW, 0)[0] = 1;
	anon(s + 8 * P, RW, 0);
	anon(s + 4 * P, RW, 0);
	printf("left_faulted %d\n", vmas(s, s + 12 * P));

	s = AT(5);
	anon(s, RW, 0);
	anon(s + 4 * P, PROT_READ, 0);
	printf("prot %d\n", vmas(s, s + 8 * P));

	s = AT(6);
	anon(s, RW, 0);
	anon(s + 4 * P, RW, MAP_NORESERVE);
	printf("noreserve %d\n", vmas(s, s + 8 * P));

	s = AT(7);
	map(s, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	map(s + 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	printf("shared_anon %d\n", vmas(s, s + 8 * P));

	s = AT(8);
	map(s, PROT_READ, MAP_PRIVATE, fd, 0);
	map(s + 4 * P, PROT_READ, MAP_PRIVATE, fd, 4 * P);
	printf("file_next %d\n", vmas(s, s + 8 * P));

	s = AT(9);
	map(s, PROT_READ, MAP_PRIVATE, fd, 0);
	map(s + 4 * P, PROT_READ, MAP_PRIVATE, fd, 0);
	printf("file_same %d\n", vmas(s, s + 8 * P));

	s = AT(10);
	map(s, RW, MAP_SHARED, fd, 0);
	map(s + 4 * P, RW, MAP_SHARED, fd, 4 * P);
	printf("file_shared %d\n", vmas(s, s + 8 * P));

	s = AT(11);
	anon(s, RW, 0)[0] = 1;
	anon(s + 4 * P, RWX, 0)[0] = 1;
	protect(s + 4 * P, 4 * P, RW);
	printf("exec_prev %d\n", vmas(s, s + 8 * P));

	s = AT(12);
	anon(s + 4 * P, RW, 0)[0] = 1;
	anon(s, RWX, 0)[0] = 1;
	protect(s, 4 * P, RW);
	printf("exec_next %d\n", vmas(s, s + 8 * P));

	s = AT(13);
	anon(s, RW, 0)[0] = 1;
	anon(s + 8 * P, RWX, 0)[0] = 1;
	anon(s + 4 * P, RWX, 0);
	protect(s + 4 * P, 8 * P, RW);
	printf("exec_apart %d\n", vmas(s, s + 12 * P));

	s = AT(14);
	anon(s, RW, 0)[0] = 1;
	anon(s + 8 * P, RW, 0)[0] = 1;
	anon(s + 4 * P, RWX, 0)[0] = 1;
	protect(s + 4 * P, 4 * P, RW);
	printf("exec_between %d\n", vmas(s, s + 8 * P));
	return 0;
}
