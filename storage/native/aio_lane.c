/*
 * Linux AIO for O_DIRECT reads and writes: the fast path of a direct I/O lane (storage/io-lane.ts).
 *
 * Why: on the thread lane (io_lane.c) every request costs a futex wake of a lane thread, two context
 * switches, one device kick of its own and one thread-safe-function call back into JS. With 32 requests
 * in flight on a 2-core machine that was over half of the daemon's CPU time (perf: finish_task_switch
 * and the virtio kick at the top). Here the requests of one event-loop turn go to the kernel in ONE
 * io_submit from the JS thread (the block layer plugs them: one kick), and completions come back
 * through an eventfd watched by the event loop itself (uv_poll): one wake-up, one io_getevents and one
 * call into JS for every request that finished meanwhile. This is what qemu's --aio=native does.
 *
 *   aioCreate(maxEvents, list, cb)      -> handle, or undefined when the kernel gives no AIO context.
 *                                          `list` (Float64Array, >= maxEvents) receives the ids of
 *                                          finished ops; cb(n) runs on the JS thread with their count.
 *   aioSubmit(h, fd, align, bufs, desc) -> id of desc's first op; op k has id + k. desc as io_lane.c.
 *                                          Ops that did not go to the kernel get errno -1 in desc
 *                                          (offset or length not aligned, not a read/write, the
 *                                          context is full, AIO refused): the caller runs those on
 *                                          the thread lane. A single-segment op of up to 64 KiB on
 *                                          unaligned memory goes through an aligned bounce buffer.
 *                                          A finished op's done/errno are written into desc.
 *   aioAbandon(h, id)                   -> 1 if the op is still in the kernel: it no longer keeps the
 *                                          event loop alive (its result still arrives, with its id).
 *   aioClose(h)                         the context is destroyed once nothing is in flight.
 *
 * Submission never sleeps on the JS thread: every iocb carries RWF_NOWAIT, so where the kernel would
 * block (the device's queue full, a filesystem lock, an allocating write) it fails that op with
 * EAGAIN instead, and the caller runs it on the thread lane. A hung device therefore cannot stall the
 * event loop; an op that never completes is abandoned by the JS-side deadline (ETIMEDOUT) while its
 * memory stays referenced here until the kernel lets go of it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/aio_abi.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define HDR 6
#define MAX_SEGS 64
#define PAGE 4096
/* Single-segment ops on memory Node placed anywhere (small READ replies, small WRITE payloads) go
 * through an aligned bounce buffer of up to this size, kept in per-size free lists. */
#define BOUNCE_PAGES 16
#define BOUNCE_KEEP 64
#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

typedef struct aioh aioh_t;

/* One aioSubmit call: keeps its buffers and desc alive until its last op is back. */
typedef struct batch {
  aioh_t *h;
  napi_ref bufs_ref, desc_ref;
  double *desc;
  int pending;
} batch_t;

typedef struct aop {
  struct iocb cb;
  batch_t *b;
  struct aop *next, *prev; /* in flight, for aioAbandon */
  uint32_t id;
  size_t at; /* index of the op's header in desc */
  int abandoned;
  int is_read;
  uint8_t *bounce; /* aligned copy of `target` (NULL: the kernel uses the caller's memory) */
  uint8_t *target;
  size_t pages;
} aop_t;

typedef struct bnode {
  struct bnode *next;
} bnode_t;

struct aioh {
  aio_context_t ctx;
  int efd;
  int max;
  int inflight;  /* ops in the kernel */
  int counted;   /* of those, the ones keeping the loop alive */
  int closing, destroyed, broken;
  int handle_closed, external_gone; /* freed when both */
  uint32_t next_id;
  uv_poll_t poll;
  napi_env env;
  napi_ref cb_ref, list_ref;
  double *list;
  size_t list_len;
  napi_async_context actx;
  aop_t *all;
  bnode_t *free_bounce[BOUNCE_PAGES + 1];
  int nfree[BOUNCE_PAGES + 1];
};

static uint8_t *bounce_get(aioh_t *h, size_t pages) {
  bnode_t *n = h->free_bounce[pages];
  if (n) {
    h->free_bounce[pages] = n->next;
    h->nfree[pages]--;
    return (uint8_t *)n;
  }
  void *p = NULL;
  return posix_memalign(&p, PAGE, pages * PAGE) == 0 ? p : NULL;
}

static void bounce_put(aioh_t *h, uint8_t *p, size_t pages) {
  if (h->destroyed || h->nfree[pages] >= BOUNCE_KEEP) {
    free(p);
    return;
  }
  bnode_t *n = (bnode_t *)p;
  n->next = h->free_bounce[pages];
  h->free_bounce[pages] = n;
  h->nfree[pages]++;
}

static void bounce_free_all(aioh_t *h) {
  for (size_t k = 0; k <= BOUNCE_PAGES; k++) {
    while (h->free_bounce[k]) {
      bnode_t *n = h->free_bounce[k];
      h->free_bounce[k] = n->next;
      free(n);
    }
    h->nfree[k] = 0;
  }
}

static long sys_io_setup(unsigned n, aio_context_t *ctx) { return syscall(SYS_io_setup, n, ctx); }
static long sys_io_destroy(aio_context_t ctx) { return syscall(SYS_io_destroy, ctx); }
static long sys_io_submit(aio_context_t ctx, long n, struct iocb **cbs) { return syscall(SYS_io_submit, ctx, n, cbs); }
static long sys_io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev, struct timespec *ts) {
  return syscall(SYS_io_getevents, ctx, min, max, ev, ts);
}

static void batch_unref(napi_env env, batch_t *b) {
  if (--b->pending > 0) return;
  napi_delete_reference(env, b->bufs_ref);
  napi_delete_reference(env, b->desc_ref);
  free(b);
}

static void keep_alive(aioh_t *h) {
  if (h->destroyed) return;
  if (h->counted > 0) uv_ref((uv_handle_t *)&h->poll);
  else uv_unref((uv_handle_t *)&h->poll);
}

static void on_closed(uv_handle_t *handle) {
  aioh_t *h = handle->data;
  if (h->env) {
    napi_delete_reference(h->env, h->cb_ref);
    napi_delete_reference(h->env, h->list_ref);
    napi_async_destroy(h->env, h->actx);
  }
  h->handle_closed = 1;
  if (h->external_gone) free(h);
}

/* The JS handle was collected; the struct goes once the poll handle is closed too. */
static void on_external_gone(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  aioh_t *h = data;
  h->external_gone = 1;
  if (h->handle_closed) free(h);
}

static void cleanup_hook(void *arg);

/* Nothing in flight and closing: give everything back. */
static void maybe_destroy(aioh_t *h) {
  if (h->destroyed || !h->closing || h->inflight > 0) return;
  h->destroyed = 1;
  napi_remove_env_cleanup_hook(h->env, cleanup_hook, h);
  sys_io_destroy(h->ctx);
  close(h->efd);
  bounce_free_all(h);
  uv_close((uv_handle_t *)&h->poll, on_closed);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  aioh_t *h = poll->data;
  uint64_t ticks;
  if (read(h->efd, &ticks, sizeof ticks) < 0 && errno != EAGAIN) status = -1;
  (void)status;
  napi_env env = h->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  size_t n = 0;
  struct io_event ev[64];
  struct timespec zero = {0, 0};
  for (;;) {
    /* The list holds max ids and no more than max ops are ever in flight, so this never cuts short;
     * if it did, the eventfd is poked so that the rest comes in the next turn (never lost). */
    size_t room = h->list_len - n;
    if (room == 0) {
      uint64_t one = 1;
      if (write(h->efd, &one, sizeof one) < 0) { /* the counter is saturated: it is readable anyway */
      }
      break;
    }
    long got = sys_io_getevents(h->ctx, 0, room < 64 ? (long)room : 64, ev, &zero);
    if (got <= 0) break;
    for (long i = 0; i < got; i++) {
      aop_t *op = (aop_t *)(uintptr_t)ev[i].data;
      batch_t *b = op->b;
      double *d = b->desc + op->at;
      int64_t res = (int64_t)ev[i].res;
      d[4] = res >= 0 ? (double)res : 0;
      d[5] = res >= 0 ? 0 : (double)-res;
      if (op->bounce) {
        /* an abandoned read's late bytes must not reach memory that may be serving another request */
        if (op->is_read && res > 0 && !op->abandoned) memcpy(op->target, op->bounce, (size_t)res);
        bounce_put(h, op->bounce, op->pages);
      }
      h->list[n++] = op->id;
      h->inflight--;
      if (!op->abandoned) h->counted--;
      if (op->prev) op->prev->next = op->next;
      else h->all = op->next;
      if (op->next) op->next->prev = op->prev;
      batch_unref(env, b);
      free(op);
    }
    if (got < 64 && (size_t)got < room) break; /* drained */
  }
  keep_alive(h);
  if (n > 0) {
    napi_value cb, global, arg, ignored, err;
    napi_get_reference_value(env, h->cb_ref, &cb);
    napi_get_global(env, &global);
    napi_create_uint32(env, (uint32_t)n, &arg);
    if (napi_make_callback(env, h->actx, global, cb, 1, &arg, &ignored) == napi_pending_exception &&
        napi_get_and_clear_last_exception(env, &err) == napi_ok)
      napi_fatal_exception(env, err); /* as any other callback's throw: process 'uncaughtException' */
  }
  maybe_destroy(h);
  napi_close_handle_scope(env, scope);
}

static void cleanup_hook(void *arg) {
  aioh_t *h = arg;
  if (h->destroyed) return;
  h->destroyed = 1;
  h->env = NULL; /* references die with the environment */
  uv_poll_stop(&h->poll);
  if (h->inflight == 0) sys_io_destroy(h->ctx); /* else it would wait for the stuck ops: leave it */
  close(h->efd);
  bounce_free_all(h);
  uv_close((uv_handle_t *)&h->poll, on_closed);
}

#define THROW(msg)                                                                                 \
  do {                                                                                             \
    napi_throw_type_error(env, NULL, "remapd_native: " msg);                                       \
    return NULL;                                                                                   \
  } while (0)

static aioh_t *get_h(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "remapd_native: not an AIO context");
    return NULL;
  }
  return p;
}

static napi_value aio_create(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result, name;
  int32_t max;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &max) != napi_ok || max < 1 || max > 4096 ||
      napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array || len < (size_t)max || napi_typeof(env, argv[2], &t) != napi_ok ||
      t != napi_function)
    THROW("aioCreate(maxEvents 1..4096, Float64Array(>= maxEvents), function)");
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) return NULL;
  aioh_t *h = calloc(1, sizeof *h);
  if (!h) THROW("out of memory");
  if (sys_io_setup((unsigned)max, &h->ctx) < 0) {
    free(h); /* no AIO here (aio-max-nr reached, a sandbox): the caller keeps the thread lane */
    napi_get_undefined(env, &result);
    return result;
  }
  h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (h->efd < 0 || uv_poll_init(loop, &h->poll, h->efd) != 0) {
    if (h->efd >= 0) close(h->efd);
    sys_io_destroy(h->ctx);
    free(h);
    napi_get_undefined(env, &result);
    return result;
  }
  h->poll.data = h;
  h->env = env;
  h->max = max;
  h->list = data;
  h->list_len = len;
  napi_create_reference(env, argv[1], 1, &h->list_ref);
  napi_create_reference(env, argv[2], 1, &h->cb_ref);
  napi_create_string_utf8(env, "remapd:aio", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &h->actx);
  uv_poll_start(&h->poll, UV_READABLE, on_readable);
  keep_alive(h);
  napi_add_env_cleanup_hook(env, cleanup_hook, h);
  napi_create_external(env, h, on_external_gone, NULL, &result);
  return result;
}

static int aligned(uintptr_t v, int64_t a) { return (v & (uintptr_t)(a - 1)) == 0; }

/* aioSubmit(h, fd, align, bufs, desc) -> id of the first op */
static napi_value aio_submit(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) THROW("aioSubmit(h, fd, align, bufs, desc)");
  aioh_t *h = get_h(env, argv[0]);
  if (!h) return NULL;
  int32_t fd, align;
  uint32_t nbufs = 0;
  bool is_array = false;
  napi_typedarray_type type;
  size_t desc_len = 0;
  void *desc_data = NULL;
  napi_is_array(env, argv[3], &is_array);
  if (napi_get_value_int32(env, argv[1], &fd) != napi_ok || napi_get_value_int32(env, argv[2], &align) != napi_ok ||
      align <= 0 || (align & (align - 1)) != 0 || !is_array || napi_get_array_length(env, argv[3], &nbufs) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &type, &desc_len, &desc_data, NULL, NULL) != napi_ok ||
      type != napi_float64_array)
    THROW("aioSubmit(h, fd, align (power of 2, > 0), Buffer[], Float64Array)");
  double *desc = desc_data;
  uint32_t first = h->next_id;
  /* ops in desc, and where each goes */
  size_t nops = 0;
  for (size_t i = 0; i + HDR <= desc_len; nops++) {
    size_t nseg = (size_t)desc[i + 3];
    if (desc[i + 3] < 0 || nseg > MAX_SEGS || i + HDR + 3 * nseg > desc_len) THROW("aioSubmit: bad op header");
    i += HDR + 3 * nseg;
  }
  h->next_id += (uint32_t)nops;
  uint8_t *bases[64];
  size_t sizes[64];
  uint8_t **bp = nbufs <= 64 ? bases : malloc(nbufs * sizeof *bp);
  size_t *sp = nbufs <= 64 ? sizes : malloc(nbufs * sizeof *sp);
  aop_t **ops = malloc((nops ? nops : 1) * sizeof *ops);
  struct iocb **cbs = malloc((nops ? nops : 1) * sizeof *cbs);
  struct iovec *iov = malloc((nops ? nops : 1) * MAX_SEGS * sizeof *iov);
  batch_t *b = calloc(1, sizeof *b);
  int ok = bp && sp && ops && cbs && iov && b;
  for (uint32_t k = 0; ok && k < nbufs; k++) {
    napi_value el;
    void *p = NULL;
    size_t n = 0;
    if (napi_get_element(env, argv[3], k, &el) != napi_ok || napi_get_buffer_info(env, el, &p, &n) != napi_ok) ok = 0;
    bp[k] = p;
    sp[k] = n;
  }
  size_t ncb = 0, op_index = 0;
  for (size_t i = 0; ok && i + HDR <= desc_len; op_index++) {
    double *d = desc + i;
    size_t nseg = (size_t)d[3];
    size_t at = i;
    i += HDR + 3 * nseg;
    int take = !h->closing && !h->broken && h->inflight + (int)ncb < h->max && (d[0] == 0 || d[0] == 1) && nseg > 0 &&
               d[1] >= 0 && d[1] <= 9007199254740991.0 && d[2] > 0 && aligned((uintptr_t)d[1], align) &&
               aligned((uintptr_t)d[2], align);
    double total = 0;
    int misaligned = 0;
    struct iovec *v = iov + ncb * MAX_SEGS;
    for (size_t s = 0; take && s < nseg; s++) {
      double bi = d[HDR + 3 * s], bo = d[HDR + 3 * s + 1], bl = d[HDR + 3 * s + 2];
      if (bi < 0 || bi >= nbufs || bo < 0 || bl <= 0 || bo + bl > (double)sp[(size_t)bi]) {
        take = 0; /* the thread lane reports the bad segment */
        break;
      }
      v[s].iov_base = bp[(size_t)bi] + (size_t)bo;
      v[s].iov_len = (size_t)bl;
      if (!aligned(v[s].iov_len, align)) take = 0;
      else if (!aligned((uintptr_t)v[s].iov_base, align)) misaligned = 1;
      total += bl;
    }
    if (take && total != d[2]) take = 0;
    size_t pages = (size_t)(d[2] + PAGE - 1) / PAGE;
    if (take && misaligned && (nseg != 1 || pages > BOUNCE_PAGES || (int64_t)PAGE % align != 0)) take = 0;
    d[4] = 0;
    d[5] = take ? 0 : -1;
    if (!take) continue;
    aop_t *op = calloc(1, sizeof *op);
    if (op && misaligned) {
      op->bounce = bounce_get(h, pages);
      op->pages = pages;
      op->target = v[0].iov_base;
      if (op->bounce && d[0] == 1) memcpy(op->bounce, op->target, v[0].iov_len);
      v[0].iov_base = op->bounce;
    }
    if (!op || (misaligned && !op->bounce)) {
      free(op);
      d[5] = -1;
      continue;
    }
    op->is_read = d[0] == 0;
    op->b = b;
    op->id = first + (uint32_t)op_index;
    op->at = at;
    op->cb.aio_data = (uint64_t)(uintptr_t)op;
    op->cb.aio_lio_opcode = d[0] == 0 ? IOCB_CMD_PREADV : IOCB_CMD_PWRITEV;
    op->cb.aio_fildes = (uint32_t)fd;
    op->cb.aio_buf = (uint64_t)(uintptr_t)v;
    op->cb.aio_nbytes = nseg;
    op->cb.aio_offset = (int64_t)d[1];
    op->cb.aio_flags = IOCB_FLAG_RESFD;
    op->cb.aio_resfd = (uint32_t)h->efd;
    op->cb.aio_rw_flags = RWF_NOWAIT;
    ops[ncb] = op;
    cbs[ncb++] = &op->cb;
  }
  long sent = 0;
  if (ok && ncb > 0) {
    sent = sys_io_submit(h->ctx, (long)ncb, cbs);
    if (sent < 0) {
      /* EAGAIN: full for now; anything else (EINVAL, EOPNOTSUPP: no RWF_NOWAIT, an fd AIO refuses):
       * use the thread lane from now on. */
      if (errno != EAGAIN && errno != EINTR) h->broken = 1;
      sent = 0;
    }
  }
  for (size_t k = (size_t)sent; k < ncb; k++) {
    desc[ops[k]->at + 5] = -1;
    if (ops[k]->bounce) bounce_put(h, ops[k]->bounce, ops[k]->pages);
    free(ops[k]);
  }
  if (sent > 0) {
    b->h = h;
    b->desc = desc;
    b->pending = (int)sent;
    napi_create_reference(env, argv[3], 1, &b->bufs_ref);
    napi_create_reference(env, argv[4], 1, &b->desc_ref);
    for (long k = 0; k < sent; k++) {
      aop_t *op = ops[k];
      op->next = h->all;
      if (h->all) h->all->prev = op;
      h->all = op;
    }
    h->inflight += (int)sent;
    h->counted += (int)sent;
    keep_alive(h);
  } else {
    free(b);
  }
  if (!ok) /* out of memory before anything was sent: everything to the thread lane */
    for (size_t i = 0; i + HDR <= desc_len; i += HDR + 3 * (size_t)desc[i + 3]) desc[i + 5] = -1;
  if (bp != bases) free(bp);
  if (sp != sizes) free(sp);
  free(ops);
  free(cbs);
  free(iov);
  napi_create_uint32(env, first, &result);
  return result;
}

static napi_value aio_abandon(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  uint32_t id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) THROW("aioAbandon(h, id)");
  aioh_t *h = get_h(env, argv[0]);
  if (!h) return NULL;
  if (napi_get_value_uint32(env, argv[1], &id) != napi_ok) THROW("aioAbandon: id");
  aop_t *op = h->all;
  while (op && op->id != id) op = op->next;
  if (op && !op->abandoned) {
    op->abandoned = 1;
    h->counted--;
    keep_alive(h);
  }
  napi_get_boolean(env, op != NULL, &result);
  return result;
}

static napi_value aio_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) THROW("aioClose(h)");
  aioh_t *h = get_h(env, argv[0]);
  if (!h) return NULL;
  h->closing = 1;
  maybe_destroy(h);
  return NULL;
}

napi_status aio_lane_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"aioCreate", NULL, aio_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aioSubmit", NULL, aio_submit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aioAbandon", NULL, aio_abandon, NULL, NULL, NULL, napi_enumerable, NULL},
      {"aioClose", NULL, aio_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
