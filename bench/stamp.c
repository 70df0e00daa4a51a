/*
 * A render that only says when it ran: appends "<parent pid> <task id> <start> <end>\n" (CLOCK_REALTIME
 * seconds; task id from $KQ_TASK_ID, set by the agent, or 0) to $KQ_BENCH_STAMP. The parent is the agent (setpriv execs the command), so consecutive lines of one
 * parent give the gap between one render's end and the next render's start on that agent: the dispatch
 * latency as a user sees it. Built by the bench with `cc -O2`.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void) {
  struct timespec start, end;
  clock_gettime(CLOCK_REALTIME, &start);
  const char *file = getenv("KQ_BENCH_STAMP");
  if (!file) return 0;
  int fd = open(file, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) return 1;
  clock_gettime(CLOCK_REALTIME, &end);
  const char *task = getenv("KQ_TASK_ID");
  char line[128];
  int n = snprintf(line, sizeof line, "%d %ld %lld.%09ld %lld.%09ld\n", (int)getppid(), task ? atol(task) : 0L,
                   (long long)start.tv_sec, start.tv_nsec, (long long)end.tv_sec, end.tv_nsec);
  ssize_t w = write(fd, line, (size_t)n); /* O_APPEND + one short write: lines never interleave */
  close(fd);
  return w == n ? 0 : 1;
}
