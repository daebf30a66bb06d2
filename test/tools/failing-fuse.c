/*
 * failing-fuse: a FUSE file system holding one file, `disk`, backed by an image file, whose chosen
 * 512-byte sectors fail reads and/or writes. `losetup` turns `disk` into a real kernel block device
 * whose media errors come from the kernel, not from inside the process under test.
 *
 * Why: a test that injects errors inside remapd sits above the page cache and cannot see what a dying
 * disk does to a buffered reader or writer. This program sits *below* the kernel block layer.
 *
 *   failing-fuse IMAGE MOUNTPOINT [-o fuse-options]
 *
 * The mount holds two files:
 *   disk  the image (read/write, fixed size). Opened with direct_io: no FUSE page cache, every read and
 *         write request reaches this program, and fails or succeeds as a whole (a failing request
 *         writes nothing), as a disk command does.
 *   ctl   the control file. Write commands (one per line); read back the answers of the commands
 *         written on the same open file description. A command that does not parse fails the write
 *         with EINVAL (and its answer says why). Sector numbers are 512-byte units of the image.
 *
 *     fail read|write|rw START COUNT [ERRNO]   requests touching these sectors fail (default EIO;
 *                                              also ENODATA, EILSEQ, EBADMSG, ENOSPC, EROFS, ENXIO, ...)
 *     fail pending START COUNT [ERRNO]         reads fail until a successful write covers the sector
 *                                              (a drive reallocates a pending sector when written)
 *     heal read|write|rw|pending START COUNT   remove those sectors from the failing ranges
 *     delay MS START COUNT                     requests touching these sectors sleep MS first (0: none)
 *     vanish on [ERRNO] | vanish off           every I/O and fsync fails (default ENXIO): device gone
 *     fail-fsync on [ERRNO] | fail-fsync off   fsync/flush fails (default EIO)
 *     clear                                    no failing ranges, no delays, not vanished
 *     reset                                    all counters to zero
 *     stats                                    "reads N writes N read_errors N write_errors N fsyncs N
 *                                              bytes_read N bytes_written N"
 *     hits START COUNT                         one line per sector: "SECTOR READS WRITES" (requests
 *                                              that touched that sector, failed ones included)
 *     faults                                   the fault list, one line per range
 *
 * Through a loop device: with `losetup --direct-io=on` the errno chosen here reaches the reader of the
 * loop device (ENODATA stays ENODATA, as a SCSI medium error does since Linux 4.13); a buffered loop
 * device on Linux 6.1 turns every error into EIO. Through the loop driver ENXIO (vanish) becomes EIO.
 *
 * Build: cc -O2 -Wall failing-fuse.c $(pkg-config --cflags --libs fuse3) (test/helpers/failing-disk.ts
 * does this on demand into a cache directory).
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECTOR 512ULL
#define FAULT_READ 1
#define FAULT_WRITE 2
#define FAULT_PENDING 4 /* read fails until a successful write of the sector (a drive's pending sector) */
#define MAX_HITS_QUERY 65536

/* A failing or slow range of sectors [start, start+count). */
struct range {
  uint64_t start, count;
  int kinds;    /* FAULT_READ | FAULT_WRITE, for failing ranges */
  int err;      /* errno returned for failing ranges */
  unsigned ms;  /* delay, for slow ranges */
};

struct range_list {
  struct range *v;
  size_t n, cap;
};

static int image_fd = -1;
static uint64_t image_bytes;
static uint64_t sectors;
static uint32_t *read_hits, *write_hits;      /* per sector, updated atomically */
static uint64_t n_reads, n_writes, n_read_errors, n_write_errors, n_fsyncs, n_bytes_read, n_bytes_written;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards the fault state below */
static struct range_list fails, delays;
static int vanished, vanish_err = ENXIO;
static int fsync_fails, fsync_err = EIO;

/* Per open of `ctl`: answers not yet read. */
struct answer {
  char *buf;
  size_t len, cap;
};

static const struct { const char *name; int value; } errnos[] = {
  {"EIO", EIO}, {"ENODATA", ENODATA}, {"EILSEQ", EILSEQ}, {"EBADMSG", EBADMSG}, {"ENOSPC", ENOSPC},
  {"EROFS", EROFS}, {"EACCES", EACCES}, {"EPERM", EPERM}, {"ENXIO", ENXIO}, {"ENODEV", ENODEV},
  {"ETIMEDOUT", ETIMEDOUT}, {"EBADF", EBADF}, {"EINVAL", EINVAL}, {"ENOLINK", ENOLINK},
};

static int parse_errno(const char *s, int dflt) {
  if (!s || !*s) return dflt;
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
    if (!strcmp(s, errnos[i].name)) return errnos[i].value;
  return -1;
}

static const char *errno_name(int e) {
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
    if (errnos[i].value == e) return errnos[i].name;
  return "E?";
}

static void answer_add(struct answer *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void answer_add(struct answer *a, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    size_t room = a->cap - a->len;
    va_start(ap, fmt);
    int n = vsnprintf(a->buf ? a->buf + a->len : NULL, a->buf ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (a->buf && (size_t)n < room) {
      a->len += (size_t)n;
      return;
    }
    size_t cap = a->cap ? a->cap * 2 : 4096;
    while (cap < a->len + (size_t)n + 1) cap *= 2;
    char *b = realloc(a->buf, cap);
    if (!b) return;
    a->buf = b;
    a->cap = cap;
  }
}

/* --- range lists ---------------------------------------------------------------------------- */

static int list_push(struct range_list *l, struct range r) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    struct range *v = realloc(l->v, cap * sizeof *v);
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = r;
  return 0;
}

/* Remove `kinds` from [start, start+count) in a list of failing ranges (splitting ranges as needed). */
static void fails_remove(uint64_t start, uint64_t count, int kinds) {
  struct range_list out = {0};
  uint64_t end = start + count;
  for (size_t i = 0; i < fails.n; i++) {
    struct range r = fails.v[i];
    uint64_t rend = r.start + r.count;
    if (rend <= start || r.start >= end || !(r.kinds & kinds)) {
      list_push(&out, r);
      continue;
    }
    if (r.start < start) list_push(&out, (struct range){r.start, start - r.start, r.kinds, r.err, 0});
    uint64_t ms = r.start > start ? r.start : start, me = rend < end ? rend : end;
    if (r.kinds & ~kinds) list_push(&out, (struct range){ms, me - ms, r.kinds & ~kinds, r.err, 0});
    if (rend > end) list_push(&out, (struct range){end, rend - end, r.kinds, r.err, 0});
  }
  free(fails.v);
  fails = out;
}

/* Sectors touched by [off, off+size): [*first, *last]. */
static void sector_span(off_t off, size_t size, uint64_t *first, uint64_t *last) {
  *first = (uint64_t)off / SECTOR;
  *last = ((uint64_t)off + (size ? size : 1) - 1) / SECTOR;
}

/* Under no lock: the errno a request of `kind` on [first,last] fails with (0: it does not), and its delay. */
static int check_request(int kind, uint64_t first, uint64_t last, unsigned *delay_ms) {
  int err = 0;
  *delay_ms = 0;
  pthread_mutex_lock(&lock);
  if (vanished) err = vanish_err;
  for (size_t i = 0; !err && i < fails.n; i++) {
    struct range *r = &fails.v[i];
    if ((r->kinds & kind) && r->start <= last && r->start + r->count > first) err = r->err;
  }
  for (size_t i = 0; i < delays.n; i++) {
    struct range *r = &delays.v[i];
    if (r->start <= last && r->start + r->count > first && r->ms > *delay_ms) *delay_ms = r->ms;
  }
  pthread_mutex_unlock(&lock);
  return err;
}

static void count_hits(uint32_t *hits, uint64_t first, uint64_t last) {
  if (first >= sectors) return;
  if (last >= sectors) last = sectors - 1;
  for (uint64_t s = first; s <= last; s++) __atomic_fetch_add(&hits[s], 1, __ATOMIC_RELAXED);
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

/* --- control commands ----------------------------------------------------------------------- */

static int parse_kinds(const char *s) {
  if (!s) return 0;
  if (!strcmp(s, "read")) return FAULT_READ;
  if (!strcmp(s, "write")) return FAULT_WRITE;
  if (!strcmp(s, "rw")) return FAULT_READ | FAULT_WRITE;
  if (!strcmp(s, "pending")) return FAULT_PENDING;
  return 0;
}

static int parse_u64(const char *s, uint64_t *v) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 0);
  if (errno || *end) return -1;
  *v = x;
  return 0;
}

/* Run one command line; 0 or -EINVAL (the answer says why). */
static int run_command(char *line, struct answer *a) {
  char *save = NULL, *w[6] = {0};
  int n = 0;
  for (char *tok = strtok_r(line, " \t\r", &save); tok && n < 6; tok = strtok_r(NULL, " \t\r", &save)) w[n++] = tok;
  if (n == 0) return 0;
  const char *cmd = w[0];
  uint64_t start, count, ms;
  int rc = 0;
  pthread_mutex_lock(&lock);
  if (!strcmp(cmd, "fail") || !strcmp(cmd, "heal")) {
    int kinds = parse_kinds(w[1]);
    int err = !strcmp(cmd, "fail") ? parse_errno(w[4], EIO) : EIO;
    if (!kinds || parse_u64(w[2], &start) || parse_u64(w[3], &count) || count == 0 || err < 0) {
      answer_add(a, "error: usage: %s read|write|rw|pending START COUNT%s\n", cmd, !strcmp(cmd, "fail") ? " [ERRNO]" : "");
      rc = -EINVAL;
    } else {
      fails_remove(start, count, kinds);
      if (!strcmp(cmd, "fail")) list_push(&fails, (struct range){start, count, kinds, err, 0});
      answer_add(a, "ok\n");
    }
  } else if (!strcmp(cmd, "delay")) {
    if (parse_u64(w[1], &ms) || parse_u64(w[2], &start) || parse_u64(w[3], &count) || count == 0 || ms > 600000) {
      answer_add(a, "error: usage: delay MS START COUNT\n");
      rc = -EINVAL;
    } else {
      /* a new delay replaces older ones over the same sectors (drop fully covered ranges) */
      size_t k = 0;
      for (size_t i = 0; i < delays.n; i++)
        if (!(delays.v[i].start >= start && delays.v[i].start + delays.v[i].count <= start + count)) delays.v[k++] = delays.v[i];
      delays.n = k;
      if (ms) list_push(&delays, (struct range){start, count, 0, 0, (unsigned)ms});
      answer_add(a, "ok\n");
    }
  } else if (!strcmp(cmd, "vanish") || !strcmp(cmd, "fail-fsync")) {
    int on = w[1] && !strcmp(w[1], "on"), off = w[1] && !strcmp(w[1], "off");
    int dflt = !strcmp(cmd, "vanish") ? ENXIO : EIO;
    int err = parse_errno(w[2], dflt);
    if ((!on && !off) || err < 0) {
      answer_add(a, "error: usage: %s on [ERRNO] | %s off\n", cmd, cmd);
      rc = -EINVAL;
    } else if (!strcmp(cmd, "vanish")) {
      vanished = on;
      vanish_err = err;
      answer_add(a, "ok\n");
    } else {
      fsync_fails = on;
      fsync_err = err;
      answer_add(a, "ok\n");
    }
  } else if (!strcmp(cmd, "clear")) {
    fails.n = 0;
    delays.n = 0;
    vanished = 0;
    fsync_fails = 0;
    answer_add(a, "ok\n");
  } else if (!strcmp(cmd, "reset")) {
    memset(read_hits, 0, sectors * sizeof *read_hits);
    memset(write_hits, 0, sectors * sizeof *write_hits);
    n_reads = n_writes = n_read_errors = n_write_errors = n_fsyncs = n_bytes_read = n_bytes_written = 0;
    answer_add(a, "ok\n");
  } else if (!strcmp(cmd, "stats")) {
    answer_add(a, "reads %" PRIu64 " writes %" PRIu64 " read_errors %" PRIu64 " write_errors %" PRIu64
               " fsyncs %" PRIu64 " bytes_read %" PRIu64 " bytes_written %" PRIu64 "\n",
               __atomic_load_n(&n_reads, __ATOMIC_RELAXED), __atomic_load_n(&n_writes, __ATOMIC_RELAXED),
               __atomic_load_n(&n_read_errors, __ATOMIC_RELAXED), __atomic_load_n(&n_write_errors, __ATOMIC_RELAXED),
               __atomic_load_n(&n_fsyncs, __ATOMIC_RELAXED), __atomic_load_n(&n_bytes_read, __ATOMIC_RELAXED),
               __atomic_load_n(&n_bytes_written, __ATOMIC_RELAXED));
  } else if (!strcmp(cmd, "hits")) {
    if (parse_u64(w[1], &start) || parse_u64(w[2], &count) || count > MAX_HITS_QUERY || start >= sectors) {
      answer_add(a, "error: usage: hits START COUNT (COUNT <= %d, START < %" PRIu64 ")\n", MAX_HITS_QUERY, sectors);
      rc = -EINVAL;
    } else {
      for (uint64_t s = start; s < start + count && s < sectors; s++)
        answer_add(a, "%" PRIu64 " %u %u\n", s, __atomic_load_n(&read_hits[s], __ATOMIC_RELAXED),
                   __atomic_load_n(&write_hits[s], __ATOMIC_RELAXED));
    }
  } else if (!strcmp(cmd, "faults")) {
    for (size_t i = 0; i < fails.n; i++)
      answer_add(a, "fail %s %" PRIu64 " %" PRIu64 " %s\n",
                 fails.v[i].kinds == FAULT_PENDING ? "pending" : fails.v[i].kinds == 3 ? "rw"
                 : fails.v[i].kinds == FAULT_READ ? "read" : "write",
                 fails.v[i].start, fails.v[i].count, errno_name(fails.v[i].err));
    for (size_t i = 0; i < delays.n; i++)
      answer_add(a, "delay %u %" PRIu64 " %" PRIu64 "\n", delays.v[i].ms, delays.v[i].start, delays.v[i].count);
    if (vanished) answer_add(a, "vanish on %s\n", errno_name(vanish_err));
    if (fsync_fails) answer_add(a, "fail-fsync on %s\n", errno_name(fsync_err));
    answer_add(a, "end\n");
  } else {
    answer_add(a, "error: unknown command '%s'\n", cmd);
    rc = -EINVAL;
  }
  pthread_mutex_unlock(&lock);
  return rc;
}

/* --- FUSE operations ------------------------------------------------------------------------ */

static int is_disk(const char *p) { return !strcmp(p, "/disk"); }
static int is_ctl(const char *p) { return !strcmp(p, "/ctl"); }

static int ff_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  memset(st, 0, sizeof *st);
  st->st_uid = getuid();
  st->st_gid = getgid();
  if (!strcmp(path, "/")) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
  } else if (is_disk(path)) {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = (off_t)image_bytes;
    st->st_blocks = (blkcnt_t)(image_bytes / 512);
  } else if (is_ctl(path)) {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = 0;
  } else {
    return -ENOENT;
  }
  return 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
  (void)off, (void)fi, (void)flags;
  if (strcmp(path, "/")) return -ENOENT;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  fill(buf, "disk", NULL, 0, 0);
  fill(buf, "ctl", NULL, 0, 0);
  return 0;
}

static int ff_open(const char *path, struct fuse_file_info *fi) {
  if (is_disk(path)) {
    fi->direct_io = 1; /* no FUSE page cache: every read/write request comes here */
    fi->keep_cache = 0;
    fi->fh = 0;
    return 0;
  }
  if (is_ctl(path)) {
    struct answer *a = calloc(1, sizeof *a);
    if (!a) return -ENOMEM;
    fi->direct_io = 1;
    fi->nonseekable = 0;
    fi->fh = (uint64_t)(uintptr_t)a;
    return 0;
  }
  return -ENOENT;
}

static int ff_release(const char *path, struct fuse_file_info *fi) {
  if (is_ctl(path) && fi->fh) {
    struct answer *a = (struct answer *)(uintptr_t)fi->fh;
    free(a->buf);
    free(a);
  }
  return 0;
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  (void)fi;
  if (is_ctl(path)) return 0; /* `echo cmd > ctl` opens with O_TRUNC */
  if (is_disk(path)) return (uint64_t)size == image_bytes ? 0 : -EPERM;
  return -ENOENT;
}

static int ff_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  if (is_ctl(path)) {
    struct answer *a = (struct answer *)(uintptr_t)fi->fh;
    /* answers are consumed from the front; `off` is ignored so repeated reads drain them */
    size_t n = a->len < size ? a->len : size;
    memcpy(buf, a->buf, n);
    memmove(a->buf, a->buf + n, a->len - n);
    a->len -= n;
    return (int)n;
  }
  if (!is_disk(path)) return -ENOENT;
  if ((uint64_t)off >= image_bytes) return 0;
  if ((uint64_t)off + size > image_bytes) size = (size_t)(image_bytes - (uint64_t)off);
  uint64_t first, last;
  sector_span(off, size, &first, &last);
  __atomic_fetch_add(&n_reads, 1, __ATOMIC_RELAXED);
  count_hits(read_hits, first, last);
  unsigned ms;
  int err = check_request(FAULT_READ | FAULT_PENDING, first, last, &ms);
  if (ms) sleep_ms(ms);
  if (err) {
    __atomic_fetch_add(&n_read_errors, 1, __ATOMIC_RELAXED);
    return -err;
  }
  size_t done = 0;
  while (done < size) {
    ssize_t r = pread(image_fd, buf + done, size - done, off + (off_t)done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) {
      memset(buf + done, 0, size - done); /* short image: zeroes, as the fixed size promises */
      break;
    }
    done += (size_t)r;
  }
  __atomic_fetch_add(&n_bytes_read, size, __ATOMIC_RELAXED);
  return (int)size;
}

static int ff_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  if (is_ctl(path)) {
    struct answer *a = (struct answer *)(uintptr_t)fi->fh;
    char *copy = strndup(buf, size);
    if (!copy) return -ENOMEM;
    int rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
      int r = run_command(line, a);
      if (r && !rc) rc = r;
    }
    free(copy);
    return rc ? rc : (int)size;
  }
  if (!is_disk(path)) return -ENOENT;
  if ((uint64_t)off >= image_bytes) return -ENOSPC;
  if ((uint64_t)off + size > image_bytes) size = (size_t)(image_bytes - (uint64_t)off);
  uint64_t first, last;
  sector_span(off, size, &first, &last);
  __atomic_fetch_add(&n_writes, 1, __ATOMIC_RELAXED);
  count_hits(write_hits, first, last);
  unsigned ms;
  int err = check_request(FAULT_WRITE, first, last, &ms);
  if (ms) sleep_ms(ms);
  if (err) {
    __atomic_fetch_add(&n_write_errors, 1, __ATOMIC_RELAXED);
    return -err; /* the whole request fails and writes nothing */
  }
  size_t done = 0;
  while (done < size) {
    ssize_t r = pwrite(image_fd, buf + done, size - done, off + (off_t)done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    done += (size_t)r;
  }
  __atomic_fetch_add(&n_bytes_written, size, __ATOMIC_RELAXED);
  /* whole sectors written successfully are no longer pending */
  uint64_t full_first = ((uint64_t)off + SECTOR - 1) / SECTOR, full_end = ((uint64_t)off + size) / SECTOR;
  if (full_end > full_first) {
    pthread_mutex_lock(&lock);
    int any = 0;
    for (size_t i = 0; i < fails.n && !any; i++)
      any = (fails.v[i].kinds & FAULT_PENDING) && fails.v[i].start < full_end && fails.v[i].start + fails.v[i].count > full_first;
    if (any) fails_remove(full_first, full_end - full_first, FAULT_PENDING);
    pthread_mutex_unlock(&lock);
  }
  return (int)size;
}

static int ff_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)datasync, (void)fi;
  if (!is_disk(path)) return 0;
  __atomic_fetch_add(&n_fsyncs, 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&lock);
  int err = vanished ? vanish_err : fsync_fails ? fsync_err : 0;
  pthread_mutex_unlock(&lock);
  if (err) return -err;
  return fdatasync(image_fd) < 0 ? -errno : 0;
}

static int ff_flush(const char *path, struct fuse_file_info *fi) {
  (void)path, (void)fi;
  return 0; /* close(2): nothing buffered here */
}

static void *ff_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->use_ino = 0;
  /* let big requests through whole where the kernel allows it */
  if (conn->max_write < 1024 * 1024) conn->max_write = 1024 * 1024;
  conn->max_readahead = 0;
  return NULL;
}

static const struct fuse_operations ops = {
  .init = ff_init,
  .getattr = ff_getattr,
  .readdir = ff_readdir,
  .open = ff_open,
  .release = ff_release,
  .truncate = ff_truncate,
  .read = ff_read,
  .write = ff_write,
  .fsync = ff_fsync,
  .flush = ff_flush,
};

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s IMAGE MOUNTPOINT [fuse options]\n", argv[0]);
    return 2;
  }
  const char *image = argv[1];
  image_fd = open(image, O_RDWR | O_CLOEXEC);
  if (image_fd < 0) {
    fprintf(stderr, "failing-fuse: open %s: %s\n", image, strerror(errno));
    return 1;
  }
  struct stat st;
  if (fstat(image_fd, &st) < 0 || st.st_size <= 0 || st.st_size % SECTOR) {
    fprintf(stderr, "failing-fuse: %s: size must be a positive multiple of 512\n", image);
    return 1;
  }
  image_bytes = (uint64_t)st.st_size;
  sectors = image_bytes / SECTOR;
  read_hits = calloc(sectors, sizeof *read_hits);
  write_hits = calloc(sectors, sizeof *write_hits);
  if (!read_hits || !write_hits) {
    fprintf(stderr, "failing-fuse: out of memory for %" PRIu64 " sector counters\n", sectors);
    return 1;
  }
  /* fuse_main gets: program MOUNTPOINT [options...]; the image argument is ours */
  char **fargv = calloc((size_t)argc + 1, sizeof *fargv);
  if (!fargv) return 1;
  int fargc = 0;
  fargv[fargc++] = argv[0];
  for (int i = 2; i < argc; i++) fargv[fargc++] = argv[i];
  return fuse_main(fargc, fargv, &ops, NULL);
}
