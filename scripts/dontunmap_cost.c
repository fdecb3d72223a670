/* How much of an mremap move's fixed cost is the source's unmap: one move of PAGES pages
 * (WRITTEN of them written) timed four ways, median and least of 31 fresh layouts each
 * (CLOCK_MONOTONIC around the call; docs/calibration.md, "Held out: moves the kernel
 * places"):
 *   mode 0  MREMAP_MAYMOVE|MREMAP_FIXED to a hole (the source unmapped after the move)
 *   mode 1  the same with MREMAP_DONTUNMAP (the source VMA kept)
 *   mode 2  MREMAP_MAYMOVE|MREMAP_DONTUNMAP with no address (the kernel places it)
 *   mode 3  munmap of the source instead (for scale)
 * WARM 1 maps a written page in the destination's PMD first (its PTE table exists).
 *
 *   cc -O2 -o /tmp/dontunmap_cost scripts/dontunmap_cost.c
 *   for w in 0 1 32 256; do for m in 0 1 2 3; do /tmp/dontunmap_cost 256 $m $w 0; done; done
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
static inline uint64_t ns(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
#define PM (2UL<<20)
int cmp(const void*a,const void*b){uint64_t x=*(uint64_t*)a,y=*(uint64_t*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  if(argc!=5){fprintf(stderr,"usage: %s PAGES MODE(0-3) WRITTEN WARM(0-2)\n",argv[0]);return 2;}
  long pages=atol(argv[1]); int mode=atoi(argv[2]); long wr=atol(argv[3]); int warm=atoi(argv[4]);
  size_t len=pages*4096; int R=31; uint64_t t[64];
  for(int r=0;r<R;r++){
    /* source: 4K past a PMD boundary inside a reserved 8M area */
    char*area=mmap(0,16*PM,PROT_NONE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
    char*base=(char*)(((uintptr_t)area+PM-1)&~(PM-1));
    char*src=mmap(base+4096,len,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED,-1,0);
    for(long i=0;i<wr&&i<pages;i++)src[i*4096]=1;
    char*dst=base+4*PM+4096*2; /* a hole: unmap the reservation there */
    munmap(base+4*PM,2*PM);
    if(warm){char*n=mmap(base+4*PM+PM+PM/2,4096,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED,-1,0);n[0]=1;}
    if(warm==2){char*n=mmap(base+5*PM+4096*8,4096,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED,-1,0);n[0]=1;}
    void*ret; uint64_t a=ns();
    if(mode==0) ret=mremap(src,len,len,MREMAP_MAYMOVE|MREMAP_FIXED,dst);
    else if(mode==1) ret=mremap(src,len,len,MREMAP_MAYMOVE|MREMAP_FIXED|MREMAP_DONTUNMAP,dst);
    else if(mode==2) ret=mremap(src,len,len,MREMAP_MAYMOVE|MREMAP_DONTUNMAP,0);
    else { ret=0; munmap(src,len);} 
    uint64_t b=ns(); t[r]=b-a;
    if(ret==MAP_FAILED){perror("mremap");return 1;}
    munmap(area,16*PM); if(mode==2) munmap(ret,len);
  }
  qsort(t,R,8,cmp); printf("warm=%d pages=%ld mode=%d written=%ld median=%lu min=%lu\n",warm,pages,mode,wr,t[R/2],t[0]);
}
