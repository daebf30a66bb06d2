/*
 * I/O lanes: each backend's reads, writes and syncs run on the backend's own small pool of threads,
 * not on libuv's shared 4-thread pool, so a main device that hangs cannot starve the spare, the
 * metadata commits or anything else that needs the thread pool.
 *
 *   laneCreate(threads, maxStuck, name)        -> lane handle (external)
 *   laneSubmit(lane, fd, align, bufs, desc, cb) -> job id; cb(abandoned) runs on the JS thread
 *   laneAbandon(lane, id)                       -> 0 already finished, 1 dropped from the queue,
 *                                                  2 running: its thread is now counted as stuck
 *   laneStats(lane)                             -> [live, stuck, queued, running, target]
 *   laneClose(lane)                             threads exit once the queue is empty
 *   allocAligned(size)                          Buffer on 4096-aligned memory (posix_memalign, freed by
 *                                               the GC finalizer)
 *
 * A job is a list of ops, back to back in a Float64Array:
 *   [kind, fileOffset, length, nseg, done(out), errno(out), (bufIndex, bufOffset, segLength) x nseg]
 * kind 0 = read, 1 = write, 2 = fdatasync (no segments needed: nseg 0, length 0), 3 = stall: sleeps
 * `length` ms like a hung device (tests of deadlines and lane independence), 4 = fallocate(PUNCH_HOLE),
 * 5 = fallocate(ZERO_RANGE), 6 = ioctl(BLKZEROOUT) of [fileOffset, fileOffset+length): trim and
 * write-zeroes of main run on its lane too, under its deadline.
 * Each op is retried until complete; it stops early at end of file (read returns 0: done < length,
 * errno 0), when a write makes no progress or on an error (errno set). The other ops still run.
 *
 * align > 0 means the fd is O_DIRECT and offsets, lengths and memory must be multiples of `align`.
 * An op that is not (unaligned offset/length, or a buffer Node placed anywhere) goes through a
 * per-thread aligned bounce buffer; an unaligned write reads the head and tail sectors first
 * (read-modify-write). The JS side keeps overlapping writes out of a read-modify-write's sectors.
 *
 * Deadlines are kept on the JS side: an op that misses one is abandoned (laneAbandon). A queued job is
 * dropped; a running one keeps its thread (a read blocked in the kernel cannot be interrupted), the
 * thread is counted as stuck and a replacement is started, up to maxStuck stuck threads per lane.
 * When a stuck thread comes back and the lane has enough threads, it exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HDR 6
#define MAX_SEGS 64
#define PAGE 4096

enum { K_READ = 0, K_WRITE = 1, K_SYNC = 2, K_STALL = 3, K_PUNCH = 4, K_ZERO_RANGE = 5, K_ZEROOUT = 6 };
enum { J_QUEUED, J_RUNNING, J_DONE };

typedef struct lane lane_t;

typedef struct job {
  struct job *next;          /* queue link */
  struct job *anext, *aprev; /* queued-or-running list (for laneAbandon) */
  lane_t *lane;
  uint32_t id;
  int state;
  int abandoned;
  int counted; /* counts towards keeping the event loop alive */
  int fd;
  int64_t align;
  napi_ref bufs_ref, desc_ref, cb_ref;
  size_t desc_len;
  double *desc;
  uint8_t **bases;
  size_t nbufs;
} job_t;

struct lane {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job_t *head, *tail;
  job_t *all;
  napi_threadsafe_function tsfn;
  int target, live, stuck, max_stuck;
  int closing, finalized;
  int queued, running;
  uint32_t next_id;
  int64_t counted; /* JS thread only */
};

static __thread uint8_t *tl_bounce;
static __thread size_t tl_bounce_cap;

static uint8_t *bounce(size_t size) {
  if (size <= tl_bounce_cap) return tl_bounce;
  size_t cap = tl_bounce_cap ? tl_bounce_cap : 64 * 1024;
  while (cap < size) cap *= 2;
  void *p = NULL;
  if (posix_memalign(&p, PAGE, cap) != 0) return NULL;
  free(tl_bounce);
  tl_bounce = p;
  tl_bounce_cap = cap;
  return tl_bounce;
}

/* pread/pwrite until done, end of file or error; *n = bytes transferred; returns errno or 0. */
static int full_io(int is_write, int fd, uint8_t *buf, int64_t len, int64_t off, int64_t *n) {
  int64_t done = 0;
  while (done < len) {
    ssize_t r = is_write ? pwrite(fd, buf + done, (size_t)(len - done), off + done)
                         : pread(fd, buf + done, (size_t)(len - done), off + done);
    if (r < 0) {
      if (errno == EINTR) continue;
      *n = done;
      return errno;
    }
    if (r == 0) break;
    done += r;
  }
  *n = done;
  return 0;
}

/* iovecs of the op's segments from byte `skip` on. */
static int op_iov(job_t *j, double *segs, size_t nseg, int64_t skip, struct iovec *iov) {
  int cnt = 0;
  for (size_t s = 0; s < nseg && cnt < MAX_SEGS; s++) {
    int64_t sl = (int64_t)segs[3 * s + 2];
    if (skip >= sl) {
      skip -= sl;
      continue;
    }
    iov[cnt].iov_base = j->bases[(size_t)segs[3 * s]] + (size_t)segs[3 * s + 1] + skip;
    iov[cnt].iov_len = (size_t)(sl - skip);
    skip = 0;
    cnt++;
  }
  return cnt;
}

/* Copy between the op's segments and a flat buffer. */
static void op_copy(job_t *j, double *segs, size_t nseg, uint8_t *flat, int64_t len, int to_flat) {
  int64_t pos = 0;
  for (size_t s = 0; s < nseg && pos < len; s++) {
    uint8_t *p = j->bases[(size_t)segs[3 * s]] + (size_t)segs[3 * s + 1];
    int64_t sl = (int64_t)segs[3 * s + 2];
    if (sl > len - pos) sl = len - pos;
    if (to_flat) memcpy(flat + pos, p, (size_t)sl);
    else memcpy(p, flat + pos, (size_t)sl);
    pos += sl;
  }
}

static int op_aligned(job_t *j, int64_t off, int64_t len, double *segs, size_t nseg) {
  int64_t a = j->align;
  if (off % a || len % a) return 0;
  for (size_t s = 0; s < nseg; s++) {
    uintptr_t p = (uintptr_t)(j->bases[(size_t)segs[3 * s]] + (size_t)segs[3 * s + 1]);
    if (p % (uintptr_t)a || (int64_t)segs[3 * s + 2] % a) return 0;
  }
  return 1;
}

/* Plain (or aligned direct) transfer straight from/to the caller's memory. */
static void op_plain(job_t *j, double *d) {
  int is_write = d[0] == K_WRITE;
  int64_t off = (int64_t)d[1], len = (int64_t)d[2], done = 0;
  size_t nseg = (size_t)d[3];
  double *segs = d + HDR;
  struct iovec iov[MAX_SEGS];
  int err = 0;
  while (done < len) {
    int cnt = op_iov(j, segs, nseg, done, iov);
    if (cnt == 0) break;
    ssize_t n = is_write ? pwritev(j->fd, iov, cnt, off + done) : preadv(j->fd, iov, cnt, off + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    done += n;
  }
  d[4] = (double)done;
  d[5] = (double)err;
}

/* O_DIRECT op that is not aligned: through the thread's aligned bounce buffer. */
static void op_bounced(job_t *j, double *d) {
  int is_write = d[0] == K_WRITE;
  int64_t a = j->align, off = (int64_t)d[1], len = (int64_t)d[2];
  size_t nseg = (size_t)d[3];
  double *segs = d + HDR;
  int64_t lo = off - off % a;
  int64_t hi = (off + len + a - 1) / a * a;
  int64_t blen = hi - lo, n = 0;
  int err = 0;
  uint8_t *buf = bounce((size_t)blen);
  d[4] = 0;
  if (!buf) {
    d[5] = ENOMEM;
    return;
  }
  if (!is_write) {
    err = full_io(0, j->fd, buf, blen, lo, &n);
    int64_t got = n - (off - lo);
    if (got < 0) got = 0;
    if (got > len) got = len;
    op_copy(j, segs, nseg, buf + (off - lo), got, 0);
    d[4] = (double)got;
    d[5] = (double)err;
    return;
  }
  /* read-modify-write of the partial head and tail sectors */
  if (off != lo) {
    err = full_io(0, j->fd, buf, a, lo, &n);
    if (err) goto fail;
    if (n < a) memset(buf + n, 0, (size_t)(a - n));
  }
  if ((off + len) % a && !(hi - a == lo && off != lo)) {
    err = full_io(0, j->fd, buf + blen - a, a, hi - a, &n);
    if (err) goto fail;
    if (n < a) memset(buf + blen - a + n, 0, (size_t)(a - n));
  }
  op_copy(j, segs, nseg, buf + (off - lo), len, 1);
  err = full_io(1, j->fd, buf, blen, lo, &n);
  {
    int64_t put = n - (off - lo);
    if (put < 0) put = 0;
    if (put > len) put = len;
    d[4] = (double)put;
  }
  d[5] = (double)err;
  return;
fail:
  d[4] = 0;
  d[5] = (double)err;
}

static void run_job(job_t *j) {
  size_t i = 0;
  while (i + HDR <= j->desc_len) {
    double *d = j->desc + i;
    size_t nseg = (size_t)d[3];
    if (d[0] == K_SYNC) {
      int r;
      do r = fdatasync(j->fd);
      while (r < 0 && errno == EINTR);
      d[4] = 0;
      d[5] = r < 0 ? (double)errno : 0;
    } else if (d[0] >= K_PUNCH) {
      int64_t off = (int64_t)d[1], len = (int64_t)d[2];
      uint64_t range[2] = {(uint64_t)off, (uint64_t)len};
      int r;
      do {
        if (d[0] == K_PUNCH) r = fallocate(j->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        else if (d[0] == K_ZERO_RANGE) r = fallocate(j->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
        else r = ioctl(j->fd, BLKZEROOUT, range);
      } while (r < 0 && errno == EINTR);
      d[4] = r < 0 ? 0 : (double)len;
      d[5] = r < 0 ? (double)errno : 0;
    } else if (d[0] == K_STALL) {
      struct timespec ts = {(time_t)(d[2] / 1000), (long)((int64_t)d[2] % 1000) * 1000000L};
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
      }
      d[4] = 0;
      d[5] = 0;
    } else if (j->align > 0 && !op_aligned(j, (int64_t)d[1], (int64_t)d[2], d + HDR, nseg)) {
      op_bounced(j, d);
    } else {
      op_plain(j, d);
    }
    i += HDR + 3 * nseg;
  }
}

static void job_free(napi_env env, job_t *j);

static void unlink_all(lane_t *l, job_t *j) {
  if (j->aprev) j->aprev->anext = j->anext;
  else l->all = j->anext;
  if (j->anext) j->anext->aprev = j->aprev;
  j->anext = j->aprev = NULL;
}

static void *lane_thread(void *arg) {
  lane_t *l = arg;
  pthread_mutex_lock(&l->mu);
  for (;;) {
    if (l->live - l->stuck > l->target) break; /* surplus after a stuck thread came back */
    job_t *j = l->head;
    if (!j) {
      if (l->closing) break;
      pthread_cond_wait(&l->cv, &l->mu);
      continue;
    }
    l->head = j->next;
    if (!l->head) l->tail = NULL;
    j->state = J_RUNNING;
    l->queued--;
    l->running++;
    pthread_mutex_unlock(&l->mu);
    run_job(j);
    pthread_mutex_lock(&l->mu);
    l->running--;
    unlink_all(l, j);
    j->state = J_DONE;
    if (j->abandoned) l->stuck--;
    /* Under the lane mutex: once lane_finalize has run (env teardown deletes the tsfn whatever our
     * holds), nobody touches the tsfn again. */
    if (l->finalized || napi_call_threadsafe_function(l->tsfn, j, napi_tsfn_nonblocking) != napi_ok)
      job_free(NULL, j);
  }
  l->live--;
  int orphan_free = l->finalized && l->live == 0;
  if (!l->finalized) napi_release_threadsafe_function(l->tsfn, napi_tsfn_release);
  pthread_mutex_unlock(&l->mu);
  free(tl_bounce);
  tl_bounce = NULL;
  tl_bounce_cap = 0;
  if (orphan_free) {
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
  }
  return NULL;
}

/* Called with l->mu held. */
static int spawn(lane_t *l) {
  pthread_t t;
  pthread_attr_t attr;
  if (napi_acquire_threadsafe_function(l->tsfn) != napi_ok) return 0;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  int ok = pthread_create(&t, &attr, lane_thread, l) == 0;
  pthread_attr_destroy(&attr);
  if (ok) l->live++;
  else napi_release_threadsafe_function(l->tsfn, napi_tsfn_release);
  return ok;
}

static void job_free(napi_env env, job_t *j) {
  if (env) {
    if (j->bufs_ref) napi_delete_reference(env, j->bufs_ref);
    if (j->desc_ref) napi_delete_reference(env, j->desc_ref);
    if (j->cb_ref) napi_delete_reference(env, j->cb_ref);
  }
  free(j->desc);
  free(j->bases);
  free(j);
}

static void uncount(napi_env env, lane_t *l, job_t *j) {
  if (!j->counted) return;
  j->counted = 0;
  if (--l->counted == 0 && env) napi_unref_threadsafe_function(env, l->tsfn);
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  lane_t *l = context;
  job_t *j = data;
  if (!env) {
    job_free(NULL, j);
    return;
  }
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  uncount(env, l, j);
  napi_value desc, cb, global, ignored, arg;
  if (napi_get_reference_value(env, j->desc_ref, &desc) == napi_ok) {
    void *out = NULL;
    size_t len = 0;
    napi_typedarray_type type;
    if (napi_get_typedarray_info(env, desc, &type, &len, &out, NULL, NULL) == napi_ok &&
        type == napi_float64_array && len >= j->desc_len && out)
      memcpy(out, j->desc, j->desc_len * sizeof(double));
  }
  napi_get_reference_value(env, j->cb_ref, &cb);
  napi_get_global(env, &global);
  napi_get_boolean(env, j->abandoned != 0, &arg);
  job_free(env, j);
  napi_call_function(env, global, cb, 1, &arg, &ignored);
  napi_close_handle_scope(env, scope);
}

static void lane_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  lane_t *l = data;
  pthread_mutex_lock(&l->mu);
  l->finalized = 1;
  l->closing = 1;
  pthread_cond_broadcast(&l->cv);
  int free_now = l->live == 0;
  pthread_mutex_unlock(&l->mu);
  if (free_now) {
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
  }
}

#define THROW(kind, msg)                                                                           \
  do {                                                                                             \
    napi_throw_##kind(env, NULL, "remapd_native: " msg);                                           \
    return NULL;                                                                                   \
  } while (0)

static lane_t *get_lane(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "remapd_native: not a lane");
    return NULL;
  }
  return p;
}

static napi_value lane_create(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], name, result;
  int32_t threads, max_stuck;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &threads) != napi_ok ||
      napi_get_value_int32(env, argv[1], &max_stuck) != napi_ok || threads < 1 || threads > 64 ||
      max_stuck < 0 || max_stuck > 1024)
    THROW(type_error, "laneCreate(threads 1..64, maxStuck 0..1024, name)");
  lane_t *l = calloc(1, sizeof *l);
  if (!l) THROW(error, "out of memory");
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
  l->target = threads;
  l->max_stuck = max_stuck;
  name = argv[2];
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, l, lane_finalize, l, call_js,
                                      &l->tsfn) != napi_ok) {
    free(l);
    THROW(error, "cannot create the lane's completion queue");
  }
  napi_unref_threadsafe_function(env, l->tsfn);
  pthread_mutex_lock(&l->mu);
  for (int i = 0; i < threads; i++) spawn(l);
  int live = l->live;
  pthread_mutex_unlock(&l->mu);
  if (live == 0) THROW(error, "cannot start lane threads");
  napi_create_external(env, l, NULL, NULL, &result);
  return result;
}

/* laneSubmit(lane, fd, align, bufs, desc, cb) -> id */
static napi_value lane_submit(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6)
    THROW(type_error, "laneSubmit(lane, fd, align, bufs, desc, cb)");
  lane_t *l = get_lane(env, argv[0]);
  if (!l) return NULL;
  int32_t fd, align;
  bool is_array = false, is_ta = false;
  napi_valuetype cbt;
  napi_typedarray_type type;
  size_t desc_len = 0;
  void *desc_data = NULL;
  napi_is_array(env, argv[3], &is_array);
  napi_is_typedarray(env, argv[4], &is_ta);
  napi_typeof(env, argv[5], &cbt);
  if (napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[2], &align) != napi_ok || align < 0 ||
      (align & (align - 1)) != 0 || !is_array || !is_ta || cbt != napi_function ||
      napi_get_typedarray_info(env, argv[4], &type, &desc_len, &desc_data, NULL, NULL) != napi_ok ||
      type != napi_float64_array)
    THROW(type_error, "laneSubmit(lane, fd, align (power of 2), Buffer[], Float64Array, function)");
  uint32_t nbufs;
  if (napi_get_array_length(env, argv[3], &nbufs) != napi_ok) THROW(type_error, "bufs");
  job_t *j = calloc(1, sizeof *j);
  size_t *sizes = calloc(nbufs ? nbufs : 1, sizeof(size_t));
  const char *problem = NULL;
  if (!j || !sizes) {
    free(j);
    free(sizes);
    THROW(error, "out of memory");
  }
  j->fd = fd;
  j->align = align;
  j->desc_len = desc_len;
  j->nbufs = nbufs;
  j->desc = malloc((desc_len ? desc_len : 1) * sizeof(double));
  j->bases = calloc(nbufs ? nbufs : 1, sizeof(uint8_t *));
  if (!j->desc || !j->bases) problem = "out of memory";
  if (!problem) memcpy(j->desc, desc_data, desc_len * sizeof(double));
  for (uint32_t k = 0; !problem && k < nbufs; k++) {
    napi_value el;
    void *p = NULL;
    size_t n = 0;
    if (napi_get_element(env, argv[3], k, &el) != napi_ok ||
        napi_get_buffer_info(env, el, &p, &n) != napi_ok) {
      problem = "bufs must hold Buffers";
      break;
    }
    j->bases[k] = p;
    sizes[k] = n;
  }
  for (size_t i = 0; !problem && i < desc_len;) {
    if (i + HDR > desc_len) {
      problem = "truncated op";
      break;
    }
    double *d = j->desc + i;
    size_t nseg = (size_t)d[3];
    if (d[0] < K_READ || d[0] > K_ZEROOUT || d[0] != (double)(int)d[0] || d[3] != (double)nseg ||
        (nseg == 0 && d[0] < K_SYNC) || nseg > MAX_SEGS || i + HDR + 3 * nseg > desc_len ||
        d[1] < 0 || d[1] > 9007199254740991.0 || d[2] < 0) {
      problem = "bad op header";
      break;
    }
    double total = 0;
    for (size_t s = 0; s < nseg; s++) {
      double bi = d[HDR + 3 * s], bo = d[HDR + 3 * s + 1], bl = d[HDR + 3 * s + 2];
      if (bi < 0 || bi >= nbufs || bi != (double)(size_t)bi || bo < 0 || bl < 0 ||
          bo != (double)(size_t)bo || bl != (double)(size_t)bl || bo + bl > (double)sizes[(size_t)bi]) {
        problem = "segment outside its buffer";
        break;
      }
      total += bl;
    }
    if (!problem && d[0] < K_SYNC && total != d[2]) problem = "segment lengths do not add up to the op length";
    i += HDR + 3 * nseg;
  }
  free(sizes);
  if (!problem && (napi_create_reference(env, argv[3], 1, &j->bufs_ref) != napi_ok ||
                   napi_create_reference(env, argv[4], 1, &j->desc_ref) != napi_ok ||
                   napi_create_reference(env, argv[5], 1, &j->cb_ref) != napi_ok))
    problem = "cannot reference the arguments";
  if (problem) {
    job_free(env, j);
    char buf[160];
    snprintf(buf, sizeof buf, "remapd_native: laneSubmit: %s", problem);
    napi_throw_range_error(env, NULL, buf);
    return NULL;
  }
  j->lane = l;
  j->counted = 1;
  if (l->counted++ == 0) napi_ref_threadsafe_function(env, l->tsfn);
  pthread_mutex_lock(&l->mu);
  if (l->closing) {
    pthread_mutex_unlock(&l->mu);
    uncount(env, l, j);
    job_free(env, j);
    THROW(error, "laneSubmit: lane is closed");
  }
  j->id = ++l->next_id;
  if (j->id == 0) j->id = ++l->next_id;
  j->state = J_QUEUED;
  if (l->tail) l->tail->next = j;
  else l->head = j;
  l->tail = j;
  j->anext = l->all;
  if (l->all) l->all->aprev = j;
  l->all = j;
  l->queued++;
  uint32_t id = j->id;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
  napi_create_uint32(env, id, &result);
  return result;
}

static napi_value lane_abandon(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  uint32_t id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2)
    THROW(type_error, "laneAbandon(lane, id)");
  lane_t *l = get_lane(env, argv[0]);
  if (!l) return NULL;
  if (napi_get_value_uint32(env, argv[1], &id) != napi_ok) THROW(type_error, "laneAbandon: id");
  int outcome = 0;
  job_t *dropped = NULL, *stuck_job = NULL;
  pthread_mutex_lock(&l->mu);
  job_t *j = l->all;
  while (j && j->id != id) j = j->anext;
  if (j && j->state == J_QUEUED) {
    job_t **pp = &l->head, *prev = NULL;
    while (*pp && *pp != j) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    if (*pp) *pp = j->next;
    if (l->tail == j) l->tail = prev;
    unlink_all(l, j);
    l->queued--;
    dropped = j;
    outcome = 1;
  } else if (j && j->state == J_RUNNING) {
    if (!j->abandoned) {
      j->abandoned = 1;
      l->stuck++;
      /* keep the lane serving: a replacement thread, while the stuck ones stay bounded */
      if (l->live - l->stuck < l->target && l->stuck <= l->max_stuck) spawn(l);
    }
    stuck_job = j;
    outcome = 2;
  }
  pthread_mutex_unlock(&l->mu);
  if (stuck_job) uncount(env, l, stuck_job); /* a stuck thread does not keep the process alive */
  if (dropped) {
    uncount(env, l, dropped);
    job_free(env, dropped);
  }
  napi_create_int32(env, outcome, &result);
  return result;
}

static napi_value lane_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], arr, v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    THROW(type_error, "laneStats(lane)");
  lane_t *l = get_lane(env, argv[0]);
  if (!l) return NULL;
  pthread_mutex_lock(&l->mu);
  int vals[5] = {l->live, l->stuck, l->queued, l->running, l->target};
  pthread_mutex_unlock(&l->mu);
  napi_create_array_with_length(env, 5, &arr);
  for (uint32_t i = 0; i < 5; i++) {
    napi_create_int32(env, vals[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

static napi_value lane_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1)
    THROW(type_error, "laneClose(lane)");
  lane_t *l = get_lane(env, argv[0]);
  if (!l) return NULL;
  pthread_mutex_lock(&l->mu);
  int was = l->closing;
  l->closing = 1;
  pthread_cond_broadcast(&l->cv);
  if (!was && !l->finalized) napi_release_threadsafe_function(l->tsfn, napi_tsfn_release);
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void free_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static napi_value alloc_aligned(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int64_t size;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &size) != napi_ok || size < 0 || size > (1LL << 32))
    THROW(type_error, "allocAligned(size 0..4 GiB)");
  void *p = NULL;
  if (posix_memalign(&p, PAGE, size ? (size_t)size : 1) != 0) THROW(error, "allocAligned: out of memory");
  if (napi_create_external_buffer(env, (size_t)size, p, free_aligned, NULL, &result) != napi_ok) {
    free(p);
    THROW(error, "allocAligned: cannot create the Buffer");
  }
  return result;
}

napi_status io_lane_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"laneCreate", NULL, lane_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"laneSubmit", NULL, lane_submit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"laneAbandon", NULL, lane_abandon, NULL, NULL, NULL, napi_enumerable, NULL},
      {"laneStats", NULL, lane_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"laneClose", NULL, lane_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"allocAligned", NULL, alloc_aligned, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
