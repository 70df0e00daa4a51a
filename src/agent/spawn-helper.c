/*
 * kq-spawn-helper: a small long-lived process that forks and execs renders for one kq-agent.
 *
 * Node pays 1.5-3 ms of CPU per child_process.spawn (it forks a large process); this fork is cheap. The
 * agent computes everything (argv, environment, cwd) and asks over stdin; the helper starts the render
 * exactly as Node's spawn with `detached: true` and stdio ['ignore', 'pipe', 'pipe'] would, then relays its
 * output, its start and its end over stdout. A forked child waits on a go pipe until the agent acknowledges
 * its 'S' frame (its pid) with 'A', sent once the agent's render guard knows the group: no render process
 * ever runs that nobody would end if the agent died. It never blocks: render pipes and its stdout are non-blocking,
 * SIGCHLD arrives through a signalfd, children are reaped with WNOHANG; while more than MAX_QUEUED bytes
 * wait for the agent it stops reading renders (they wait on their full pipes). It exits when its stdin
 * closes (the agent is gone), when it cannot write to the agent, or on a bad request; every way out
 * SIGKILLs the groups of the renders it has not reaped. The agent starts it in its own process group, so
 * a kill of the agent's group leaves it the moment to do that.
 *
 * Frames, both ways: u8 type, u32 id (little endian), u32 payload length, payload.
 *   agent -> helper  'R' run:   u32 argc, u32 envc, u8 hasCwd, then NUL-terminated strings: [cwd], argv..., env...
 *                    'A' acknowledged: the agent knows this render's pid (its guard does): it may exec now
 *                    'C' close: stop relaying this render's output (its pipes are closed; later output is dropped);
 *                               one not reaped yet is SIGKILLed (the agent gave up on it before its 'S')
 *   helper -> agent  'H' hello (id 0, first frame: it runs on this host; nothing is forked before it)
 *                    'S' started: i32 pid (the child execs only once the agent answers with 'A')
 *                    'F' failed to start: i32 errno (before 'S' if the set-up failed, after it if exec did)
 *                    'O' / 'E' stdout / stderr bytes   'o' / 'e' end of stdout / stderr
 *                    'X' exited: i32 exit code (-1 if signalled), i32 signal number (0 if exited)
 * Ids are the agent's and never reused, so output of a render whose pipes were closed is never another's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_FRAME (512u * 1024u * 1024u)
#define READ_CHUNK 65536
/* Output waiting for the agent beyond which renders are not read (bounded memory when the agent stalls). */
#define MAX_QUEUED (1024u * 1024u)

struct render {
  uint32_t id;
  pid_t pid;    /* 0 once reaped */
  int fd[2];    /* stdout, stderr read ends; -1 once at end of file or closed */
  int errfd;    /* carries errno if its exec fails; -1 once reaped */
  int gofd;     /* one byte lets it exec, once the agent acknowledged its 'S'; -1 once sent */
  int exited;   /* reaped, its 'X' not framed yet (its pipes are drained first) */
  int status;
};

static struct render *renders;
static size_t nrenders, caprenders;
static int devnull = -1;

static unsigned char *out;
static size_t outlen, outcap;

/*
 * Every way out goes through here. A render not acknowledged yet never exec'd (its go pipe ends and it
 * exits); one acknowledged is known to the agent's guard. SIGKILL the groups of the renders not reaped yet
 * anyway, the sooner gone the better. Only those: a reaped leader's group number may be another's by now.
 */
static void leave(int code) {
  for (size_t i = 0; i < nrenders; i++) if (renders[i].pid) kill(-renders[i].pid, SIGKILL);
  exit(code);
}

static void die(const char *what) {
  fprintf(stderr, "kq-spawn-helper: %s: %s\n", what, strerror(errno));
  leave(1);
}

static void bad_request(const char *what) {
  fprintf(stderr, "kq-spawn-helper: %s\n", what);
  leave(2);
}

static void *grow(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) die("out of memory");
  return q;
}

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = v & 0xff; p[1] = (v >> 8) & 0xff; p[2] = (v >> 16) & 0xff; p[3] = (v >> 24) & 0xff;
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reserve room for one frame in the output buffer; returns where its payload goes. */
static unsigned char *frame(char type, uint32_t id, uint32_t len) {
  if (outlen + 9 + len > outcap) {
    outcap = (outlen + 9 + len) * 2;
    out = grow(out, outcap);
  }
  unsigned char *p = out + outlen;
  p[0] = (unsigned char)type;
  put_u32(p + 1, id);
  put_u32(p + 5, len);
  outlen += 9 + len;
  return p + 9;
}

static void frame_ints(char type, uint32_t id, int a, int b, int n) {
  unsigned char *p = frame(type, id, 4u * (uint32_t)n);
  put_u32(p, (uint32_t)a);
  if (n > 1) put_u32(p + 4, (uint32_t)b);
}

/*
 * Write what the agent's pipe takes now (stdout is non-blocking: an agent that stops reading never stalls
 * the loop, so its end of file on stdin is still seen). An agent gone ends the helper.
 */
static void flush_out(void) {
  size_t done = 0;
  while (done < outlen) {
    ssize_t n = write(1, out + done, outlen - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) leave(0);
    done += (size_t)n;
  }
  memmove(out, out + done, outlen - done);
  outlen -= done;
}

/* Exec a file the kernel would not (no #! line, not ELF): through /bin/sh, as glibc's execvp and libuv do. */
static void exec_file(const char *file, char **argv, char **envp) {
  execve(file, argv, envp);
  if (errno != ENOEXEC) return;
  size_t argc = 0;
  while (argv[argc]) argc++;
  char **shargv = malloc((argc + 2) * sizeof(char *));
  if (!shargv) { errno = ENOMEM; return; }
  shargv[0] = (char *)"/bin/sh";
  shargv[1] = (char *)file;
  for (size_t i = 1; i <= argc; i++) shargv[i + 1] = argv[i]; /* argv[argc] is the NULL */
  execve("/bin/sh", shargv, envp);
  free(shargv);
}

/* PATH lookup from the render's own environment, as libuv (Node's spawn, glibc's execvp rules) does it. */
static void exec_search(const char *file, char **argv, char **envp) {
  if (strchr(file, '/')) {
    exec_file(file, argv, envp);
    return;
  }
  const char *path = NULL;
  for (char **e = envp; *e; e++) if (strncmp(*e, "PATH=", 5) == 0) { path = *e + 5; break; }
  if (!path) path = "/usr/bin:/bin";
  size_t flen = strlen(file);
  if (flen > NAME_MAX) { errno = ENAMETOOLONG; return; }
  int eacces = 0, toolong = 0;
  for (const char *p = path;;) {
    const char *end = strchr(p, ':');
    size_t dlen = end ? (size_t)(end - p) : strlen(p);
    char buf[PATH_MAX + NAME_MAX + 2];
    if (dlen >= PATH_MAX) {
      toolong = 1; /* no such path can exist: skipped like execvp does, but said if nothing else is found */
    } else {
      if (dlen == 0) { buf[0] = '.'; dlen = 1; } else memcpy(buf, p, dlen);
      buf[dlen] = '/';
      memcpy(buf + dlen + 1, file, flen + 1);
      exec_file(buf, argv, envp);
      switch (errno) {
        case EACCES: eacces = 1; break;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: break; /* as glibc: try the next */
        default: return;
      }
    }
    if (!end) break;
    p = end + 1;
  }
  errno = eacces ? EACCES : toolong ? ENAMETOOLONG : ENOENT;
}

/* In the child: what Node's spawn (libuv) does before exec. Reports errno on errpipe if anything fails. */
static void child(int errpipe, int gor, int gow, int outw, int errw, pid_t helper, const char *cwd, char **argv, char **envp) {
  int err;
  close(gow);
  setsid(); /* its own session and process group, as with detached: true */
  /* If the helper dies before the agent has heard this render's pid, nobody could end it: it dies too.
   * (Checked after: the helper may have died before the request took effect.) */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) goto fail;
  if (getppid() != helper) { err = ESRCH; goto report; }
  if (dup2(devnull, 0) < 0 || dup2(outw, 1) < 0 || dup2(errw, 2) < 0) goto fail;
  if (cwd && chdir(cwd) < 0) goto fail;
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < _NSIG; s++) sigaction(s, &dfl, NULL);
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) goto fail;
  /* Set up (its own group exists): the helper may now tell the agent its pid. */
  int ready = 0;
  while (write(errpipe, &ready, sizeof ready) < 0 && errno == EINTR) {}
  /* Nothing runs until the agent's guard knows this group: the helper sends the go byte when the agent
   * acknowledges the pid. End of file: the helper died first, or the agent gave up on it; it never runs. */
  char go;
  ssize_t g;
  do g = read(gor, &go, 1); while (g < 0 && errno == EINTR);
  if (g != 1) _exit(127);
  environ = envp;
  exec_search(argv[0], argv, envp);
fail:
  err = errno;
report:
  while (write(errpipe, &err, sizeof err) < 0 && errno == EINTR) {}
  _exit(127);
}

static void run(uint32_t id, const unsigned char *p, uint32_t len) {
  if (len < 9) bad_request("short run request");
  uint32_t argc = get_u32(p), envc = get_u32(p + 4);
  int hascwd = p[8];
  size_t nstr = (size_t)argc + envc + (hascwd ? 1 : 0);
  if (argc < 1 || nstr > len) bad_request("bad run request");
  char **strs = grow(NULL, (nstr + 2) * sizeof(char *));
  const char *q = (const char *)p + 9, *end = (const char *)p + len;
  for (size_t i = 0; i < nstr; i++) {
    const char *z = memchr(q, 0, (size_t)(end - q));
    if (!z) bad_request("unterminated string in run request");
    strs[i] = (char *)q;
    q = z + 1;
  }
  const char *cwd = hascwd ? strs[0] : NULL;
  char **argv = strs + (hascwd ? 1 : 0);
  /* argv and env each need a NULL after them: copy env behind a NULL-terminated argv. */
  char **envp = grow(NULL, (envc + 1) * sizeof(char *));
  memcpy(envp, argv + argc, envc * sizeof(char *));
  envp[envc] = NULL;
  argv[argc] = NULL;

  int pp[4][2]; /* error, go, stdout, stderr */
  int made = 0;
  for (; made < 4; made++) if (pipe2(pp[made], O_CLOEXEC) < 0) break;
  if (made < 4) {
    int err = errno;
    for (int i = 0; i < made; i++) { close(pp[i][0]); close(pp[i][1]); }
    frame_ints('F', id, err, 0, 1);
    goto done;
  }
  pid_t self = getpid();
  pid_t pid = fork();
  if (pid == 0) child(pp[0][1], pp[1][0], pp[1][1], pp[2][1], pp[3][1], self, cwd, argv, envp);
  int forkerr = errno;
  close(pp[0][1]); close(pp[1][0]); close(pp[2][1]); close(pp[3][1]);
  if (pid < 0) {
    close(pp[0][0]); close(pp[1][1]); close(pp[2][0]); close(pp[3][0]);
    frame_ints('F', id, forkerr, 0, 1);
    goto done;
  }
  /* The error pipe carries errno if the set-up fails, else 0 once it is done (its group exists); then errno
   * if exec fails (libuv's technique), read when the child is reaped. */
  int childerr = 0;
  ssize_t n;
  do n = read(pp[0][0], &childerr, sizeof childerr); while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof childerr || childerr != 0) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {} /* no zombie: it is _exiting */
    close(pp[0][0]); close(pp[1][1]); close(pp[2][0]); close(pp[3][0]);
    frame_ints('F', id, n == (ssize_t)sizeof childerr ? childerr : EIO, 0, 1);
    goto done;
  }
  fcntl(pp[0][0], F_SETFL, O_NONBLOCK);
  fcntl(pp[2][0], F_SETFL, O_NONBLOCK);
  fcntl(pp[3][0], F_SETFL, O_NONBLOCK);
  if (nrenders == caprenders) {
    caprenders = caprenders ? caprenders * 2 : 8;
    renders = grow(renders, caprenders * sizeof *renders);
  }
  frame_ints('S', id, pid, 0, 1);
  renders[nrenders++] = (struct render){ .id = id, .pid = pid, .fd = { pp[2][0], pp[3][0] }, .errfd = pp[0][0], .gofd = pp[1][1] };
done:
  free(envp);
  free(strs);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static struct render *find_id(uint32_t id) {
  if (id == 0) return NULL; /* the id of every render closed by the agent */
  for (size_t i = 0; i < nrenders; i++) if (renders[i].id == id) return &renders[i];
  return NULL;
}

static void close_render(uint32_t id) {
  struct render *r = find_id(id);
  if (!r) return;
  for (int s = 0; s < 2; s++) if (r->fd[s] >= 0) { close(r->fd[s]); r->fd[s] = -1; }
  /* Still unreaped: the agent gave up on it before it knew it (it may not exec yet: its go pipe ends). The
   * SIGCHLD handler reaps it, no frame is sent. */
  if (r->pid) {
    kill(-r->pid, SIGKILL);
    close_fd(&r->gofd);
    r->id = 0;
  }
}

/* Forget renders with nothing left to report (reaped, 'X' framed and both streams ended or closed). */
static void sweep(void) {
  size_t j = 0;
  for (size_t i = 0; i < nrenders; i++) {
    struct render *r = &renders[i];
    if (r->pid == 0 && !r->exited && r->fd[0] < 0 && r->fd[1] < 0) continue;
    renders[j++] = *r;
  }
  nrenders = j;
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (size_t i = 0; i < nrenders; i++) {
      struct render *r = &renders[i];
      if (r->pid != pid) continue;
      r->pid = 0;
      close_fd(&r->gofd);
      int childerr = 0;
      ssize_t n = read(r->errfd, &childerr, sizeof childerr); /* written before it _exited, if at all */
      close_fd(&r->errfd);
      if (r->id == 0) break; /* closed by the agent: nobody listens */
      if (n == (ssize_t)sizeof childerr) {
        /* exec failed (after its 'S': it may only exec once the agent knows it): it wrote nothing. */
        close_fd(&r->fd[0]);
        close_fd(&r->fd[1]);
        frame_ints('F', r->id, childerr, 0, 1);
        r->id = 0;
        break;
      }
      r->exited = 1;
      r->status = status;
      break;
    }
  }
}

/* Read one chunk: 1 if it gave bytes, 0 if nothing now, -1 at end of file. */
static int pump(struct render *r, int s) {
  static unsigned char buf[READ_CHUNK];
  ssize_t n;
  do n = read(r->fd[s], buf, sizeof buf); while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  if (n > 0) {
    memcpy(frame(s ? 'E' : 'O', r->id, (uint32_t)n), buf, (size_t)n);
    return 1;
  }
  close_fd(&r->fd[s]);
  frame(s ? 'e' : 'o', r->id, 0);
  return -1;
}

/*
 * A reaped render's exit goes out after everything it wrote: its pipes are drained first (a pipe enlarged
 * with F_SETPIPE_SZ holds far more than one read). If the agent is MAX_QUEUED behind, the 'X' waits.
 */
static void report_exits(void) {
  for (size_t i = 0; i < nrenders; i++) {
    struct render *r = &renders[i];
    if (!r->exited) continue;
    if (r->id == 0) { r->exited = 0; continue; }
    int drained = 1;
    for (int s = 0; s < 2; s++)
      while (r->fd[s] >= 0) {
        if (outlen >= MAX_QUEUED) { drained = 0; break; }
        if (pump(r, s) == 0) break;
      }
    if (!drained) continue;
    r->exited = 0;
    if (WIFEXITED(r->status)) frame_ints('X', r->id, WEXITSTATUS(r->status), 0, 2);
    else frame_ints('X', r->id, -1, WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0, 2);
  }
}

/* The agent knows this render's pid (its guard does): let it exec. Closed or reaped meanwhile: nothing to do. */
static void send_go(uint32_t id) {
  struct render *r = find_id(id);
  if (!r || r->gofd < 0) return;
  char go = 1;
  while (write(r->gofd, &go, 1) < 0 && errno == EINTR) {}
  close_fd(&r->gofd);
}

/* Handle the agent's requests. */
static void handle_requests(unsigned char *in, size_t *inlen) {
  size_t off = 0;
  while (*inlen - off >= 9) {
    uint32_t id = get_u32(in + off + 1), len = get_u32(in + off + 5);
    if (len > MAX_FRAME) bad_request("request too large");
    if (*inlen - off < 9 + (size_t)len) break;
    unsigned char type = in[off];
    if (type == 'R') {
      if (id == 0 || find_id(id)) bad_request("run request with an id in use");
      run(id, in + off + 9, len);
      flush_out();
    } else if (type == 'A') send_go(id);
    else if (type == 'C') close_render(id);
    else bad_request("unknown request");
    off += 9 + (size_t)len;
  }
  memmove(in, in + off, *inlen - off);
  *inlen -= off;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  /* The agent decides when renders end; a terminal's Ctrl-C or a stop reaching its group does not end the helper. */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask");
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");
  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) die("/dev/null");
  int fl = fcntl(1, F_GETFL);
  if (fl < 0 || fcntl(1, F_SETFL, fl | O_NONBLOCK) < 0) die("stdout");
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);
  /* Hello: this binary runs on this host. Until the agent reads it, it knows nothing was forked here. */
  frame('H', 0, 0);
  flush_out();

  unsigned char *in = NULL;
  size_t inlen = 0, incap = 0;
  struct pollfd *pfd = NULL;
  size_t *owner = NULL; /* pfd index -> render index * 2 + stream */
  size_t pcap = 0;

  for (;;) {
    size_t need = 3 + nrenders * 2;
    if (need > pcap) {
      pcap = need * 2;
      pfd = grow(pfd, pcap * sizeof *pfd);
      owner = grow(owner, pcap * sizeof *owner);
    }
    size_t np = 0;
    /* Always stdin (its end of file is the agent gone); stdout while output waits for the agent. Backpressure:
     * while the agent is MAX_QUEUED behind, renders are not read (their pipes fill, they wait) nor reaped (a
     * render's exit is reported after the output it wrote before it). */
    int reading = outlen < MAX_QUEUED;
    pfd[np++] = (struct pollfd){ .fd = 0, .events = POLLIN };
    pfd[np++] = (struct pollfd){ .fd = reading ? sfd : -1, .events = POLLIN };
    pfd[np++] = (struct pollfd){ .fd = outlen ? 1 : -1, .events = POLLOUT };
    if (reading)
      for (size_t i = 0; i < nrenders; i++)
        for (int s = 0; s < 2; s++)
          if (renders[i].fd[s] >= 0) {
            owner[np] = i * 2 + (size_t)s;
            pfd[np++] = (struct pollfd){ .fd = renders[i].fd[s], .events = POLLIN };
          }
    if (poll(pfd, np, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    /* Output first: what a render wrote before it exited goes out before its exit. */
    for (size_t k = 3; k < np; k++)
      if (pfd[k].revents) pump(&renders[owner[k] / 2], (int)(owner[k] % 2));
    if (pfd[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {}
      reap();
    }
    if (pfd[0].revents) {
      if (inlen + READ_CHUNK > incap) {
        incap = (inlen + READ_CHUNK) * 2;
        in = grow(in, incap);
      }
      ssize_t n = read(0, in + inlen, READ_CHUNK);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        /* The agent is gone. Its guard kills the groups it was told of; leave() ends those it may not know. */
        flush_out();
        leave(0);
      }
      if (n > 0) inlen += (size_t)n;
    }
    report_exits();
    if (outlen) flush_out();
    if (inlen) handle_requests(in, &inlen);
    sweep();
  }
}
