/* A growable arena as garbage-collected heaps and region allocators keep one: address space
 * reserved PROT_NONE, committed with mprotect, handed back with madvise(MADV_DONTNEED),
 * a guard page kept with mprotect, and the arena relocated and grown with mremap. The
 * page tables each mremap finds are what the earlier mprotect and madvise calls left:
 * docs/real-programs.md, "mprotect and madvise". One thread; run without address-space
 * randomisation (scripts/record_program.py does).
 *
 *   cc -O2 -o /tmp/arena_remap scripts/arena_remap.c
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MiB (1UL << 20)
#define PMD (2 * MiB)

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static char *remap(char *old, size_t old_len, size_t new_len, int flags, char *to)
{
	char *p = mremap(old, old_len, new_len, flags, to);
	if (p == MAP_FAILED)
		die("mremap");
	return p;
}

int main(void)
{
	size_t reserve = 128 * MiB, arena = 24 * MiB;
	char *r = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (r == MAP_FAILED)
		die("mmap");
	/* the arena starts one page past a 2 MiB boundary of the reservation */
	char *a = (char *)(((uintptr_t)r + PMD - 1) & ~(PMD - 1)) + 4096;

	if (mprotect(a, arena, PROT_READ | PROT_WRITE))
		die("mprotect commit");
	memset(a, 1, arena);

	/* hand back 8 MiB of whole 2 MiB blocks, and 1 MiB that shares its tables */
	char *blocks = (char *)(((uintptr_t)a + 4 * MiB) & ~(PMD - 1));
	if (madvise(blocks, 8 * MiB, MADV_DONTNEED) || madvise(a + 13 * MiB, MiB, MADV_DONTNEED))
		die("madvise");
	/* a guard page in the middle: the arena is now three VMAs */
	if (mprotect(a + 16 * MiB, 4096, PROT_NONE))
		die("mprotect guard");

	/* relocate it, same offset in its 2 MiB block, 40 MiB up the reservation: all three
	 * VMAs move in one call (6.17+), the reservation there unmapped first */
	char *b = remap(a, arena, arena, MREMAP_MAYMOVE | MREMAP_FIXED, a + 40 * MiB);
	/* the guard opened again: one VMA */
	if (mprotect(b + 16 * MiB, 4096, PROT_READ | PROT_WRITE))
		die("mprotect unguard");
	memset(b + 4 * MiB, 2, 2 * MiB); /* reuse one handed-back block */

	/* move it again, now 8 KiB off its offset in the block: page by page */
	char *c = remap(b, arena, arena, MREMAP_MAYMOVE | MREMAP_FIXED, a + 80 * MiB + 4096);
	if (madvise(c + 2 * MiB, 6 * MiB, MADV_DONTNEED))
		die("madvise");

	/* grow it: the reservation's PROT_NONE rest blocks it in place, so the kernel moves it */
	char *d = remap(c, arena, arena + 8 * MiB, MREMAP_MAYMOVE, NULL);
	memset(d + arena, 3, 8 * MiB);
	printf("%p %p %p %p\n", (void *)a, (void *)b, (void *)c, (void *)d);
	return 0;
}
