#include <stdlib.h>
#include <string.h>
/* glibc: a block above the mmap threshold is its own mapping, of request + 8 bytes rounded
 * up to a page: requests of k * 2 MiB - 4 KiB grow it to whole PMDs each time. */
int main(void)
{
	size_t pmd = 2u << 20;
	char *p = malloc(pmd - 4096);
	memset(p, 1, pmd - 4096);
	for (size_t k = 2; k <= 12; k++) {
		p = realloc(p, k * pmd - 4096);
		memset(p + (k - 1) * pmd - 4096, 2, pmd);
	}
	free(p);
	return 0;
}
