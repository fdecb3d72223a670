/* A small ordinary program for perfsim's real-program checks (docs/real-programs.md):
 * each of N threads grows a buffer with plain glibc realloc(), by 1.5x from 256 KiB to
 * about 64 MiB, writing every byte of the new part the way a growing vector does.  glibc
 * serves blocks this large with mmap and grows them with mremap(MREMAP_MAYMOVE).  No fixed
 * addresses, nothing perfsim-specific.  Build: cc -O2 -pthread -o realloc_growth realloc_growth.c
 * Run: ./realloc_growth [threads=1] [max_bytes=67108864] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t max_bytes = 64u << 20;

static void *grow(void *arg)
{
    size_t len = 256u << 10, used = 0;
    unsigned char *p = NULL;
    unsigned long sum = 0;
    while (len <= max_bytes) {
        unsigned char *q = realloc(p, len);
        if (!q) {
            perror("realloc");
            exit(1);
        }
        p = q;
        memset(p + used, (int)(used & 0xff), len - used);
        used = len;
        sum += p[len / 2];
        len += len / 2;
    }
    free(p);
    *(unsigned long *)arg = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1;
    if (argc > 2)
        max_bytes = strtoull(argv[2], NULL, 0);
    if (n < 1 || n > 64) {
        fprintf(stderr, "threads: 1..64\n");
        return 2;
    }
    pthread_t t[64];
    unsigned long sums[64];
    if (n == 1) {
        grow(&sums[0]);
    } else {
        for (int i = 0; i < n; i++)
            pthread_create(&t[i], NULL, grow, &sums[i]);
        for (int i = 0; i < n; i++)
            pthread_join(t[i], NULL);
    }
    printf("%lu\n", sums[0]);
    return 0;
}
