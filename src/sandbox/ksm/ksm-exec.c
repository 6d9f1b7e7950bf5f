/*
 * stratus-ksm-exec PROGRAM [ARG...]: marks this process's memory as mergeable by KSM (kernel same-page
 * merging, prctl(PR_SET_MEMORY_MERGE, 1): every current and future anonymous mapping, Linux >= 6.4), then
 * execs PROGRAM. The flag lives on the mm and is inherited across fork and exec, so everything the process
 * driver starts after it (nsenter, bubblewrap, setpriv, node) stays mergeable. Opt-in (platform setting
 * `process.ksm`, docs/security.md "Memory deduplication"); ksmd itself is the operator's to start.
 *
 * Compiled by `npm run build` (scripts/build.mjs) to dist/stratus-ksm-exec. No allocation, no environment
 * read: it only sets the flag and execs. Exit 126 = the kernel refused the prctl (too old, or KSM not built
 * in), 127 = PROGRAM could not be executed; the reason goes to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: stratus-ksm-exec PROGRAM [ARG...]\n");
    return 2;
  }
  if (prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0) {
    fprintf(stderr, "stratus-ksm-exec: prctl(PR_SET_MEMORY_MERGE): %s (needs Linux >= 6.4 with CONFIG_KSM)\n", strerror(errno));
    return 126;
  }
  execvp(argv[1], argv + 1);
  fprintf(stderr, "stratus-ksm-exec: %s: %s\n", argv[1], strerror(errno));
  return 127;
}
