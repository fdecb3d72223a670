/* Do two neighbouring anonymous mappings become one VMA after mprotect? Four layouts that
 * differ only in VM_ACCOUNT / VM_NORESERVE history, each two 4-page mappings side by side
 * (MAP_FIXED inside a PROT_NONE reservation), then one mprotect; prints, per case, the
 * number of VMAs /proc/self/maps shows over the 8 pages (tests/test_mm_calls.py compares
 * them with perfsim.planner.mprotect.do_mprotect on the same layouts):
 *   noreserve  both PROT_READ, the second MAP_NORESERVE; mprotect both PROT_READ|PROT_WRITE
 *   unfaulted  PROT_READ|PROT_WRITE never touched, then PROT_READ; mprotect the first PROT_READ
 *   faulted    the same with the first written before
 *   opened     PROT_READ|PROT_WRITE, then a PROT_NONE one; mprotect the second read-write
 *   cc -O2 -o /tmp/vma_flags_merge scripts/vma_flags_merge.c && /tmp/vma_flags_merge
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#define P 4096UL
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)

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

static char *map(char *at, int prot, int extra)
{
	char *p = mmap(at, 4 * P, prot, ANON | extra, -1, 0);

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

int main(void)
{
	char *area = mmap(NULL, 64 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a = area, *b = area + 16 * P, *c = area + 32 * P, *d = area + 48 * P;

	if (area == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	map(a, PROT_READ, 0);
	map(a + 4 * P, PROT_READ, MAP_NORESERVE);
	protect(a, 8 * P, RW);
	printf("noreserve %d\n", vmas(a, a + 8 * P));

	map(b, RW, 0);
	map(b + 4 * P, PROT_READ, 0);
	protect(b, 4 * P, PROT_READ);
	printf("unfaulted %d\n", vmas(b, b + 8 * P));

	map(c, RW, 0)[0] = 1;
	map(c + 4 * P, PROT_READ, 0);
	protect(c, 4 * P, PROT_READ);
	printf("faulted %d\n", vmas(c, c + 8 * P));

	map(d, RW, 0);
	map(d + 4 * P, PROT_NONE, 0);
	protect(d + 4 * P, 4 * P, RW);
	printf("opened %d\n", vmas(d, d + 8 * P));
	return 0;
}
