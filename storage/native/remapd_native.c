/*
 * remapd native helpers: the few Linux calls Node's fs module does not expose.
 *
 *   punchHole(fd, offset, length)   fallocate(PUNCH_HOLE | KEEP_SIZE)      -> Promise<void>
 *   zeroRange(fd, offset, length)   fallocate(ZERO_RANGE | KEEP_SIZE)      -> Promise<void>
 *   seek(fd, offset, whence)        lseek(SEEK_DATA / SEEK_HOLE); -1 on ENXIO -> Promise<number>
 *   mapExtents(fd, offset, length, maxExtents)
 *                                   SEEK_DATA/SEEK_HOLE walk over the range -> Promise<number[]>
 *                                   (flat [length, isHole, length, isHole, ...])
 *   blkDiscard(fd, offset, length)  ioctl(BLKDISCARD)                      -> Promise<void>
 *   blkZeroout(fd, offset, length)  ioctl(BLKZEROOUT)                      -> Promise<void>
 *   sendDatagram(path, message)     one AF_UNIX datagram (sd_notify); '@' = abstract -> Promise<void>
 *   lane*, allocAligned             the data path: see io_lane.c
 *   flockNb(fd, exclusive)          flock(LOCK_EX or LOCK_UN, | LOCK_NB), synchronous (never blocks)
 *                                   -> true (done) / false (EWOULDBLOCK: held by someone else); throws
 *
 * Every call here runs as napi async work on the libuv thread pool (reads, writes and syncs do not:
 * they run on the backend's own lane, io_lane.c). Failures reject with an Error whose
 * `errno` is the positive OS error number and `syscall` names the call; the JS side maps it to a code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

enum op_kind { OP_PUNCH, OP_ZERO_RANGE, OP_SEEK, OP_MAP, OP_DISCARD, OP_ZEROOUT, OP_DGRAM };

typedef struct {
  enum op_kind kind;
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int64_t offset;
  int64_t length;
  int whence;
  int64_t result;
  int err;
  const char *syscall;
  /* OP_MAP */
  int64_t *extents; /* pairs: length, hole */
  size_t extent_count;
  size_t max_extents;
  size_t cap_extents; /* allocated pairs; grows on demand up to max_extents */
  /* OP_DGRAM */
  char *path;
  char *message;
  size_t message_len;
} work_t;

#define CHECK(call)                                                                                \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      napi_throw_error(env, NULL, "remapd_native: N-API call failed: " #call);                     \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static int add_extent(work_t *w, int64_t len, int hole) {
  if (len <= 0) return 1;
  if (w->extent_count > 0 && (w->extents[2 * (w->extent_count - 1) + 1] != 0) == (hole != 0)) {
    w->extents[2 * (w->extent_count - 1)] += len;
    return 1;
  }
  if (w->extent_count >= w->max_extents) return 0;
  if (w->extent_count >= w->cap_extents) {
    size_t cap = w->cap_extents * 2 < w->max_extents ? w->cap_extents * 2 : w->max_extents;
    int64_t *grown = realloc(w->extents, cap * 2 * sizeof(int64_t));
    if (!grown) return 0; /* as if past max: the rest is reported as data */
    w->extents = grown;
    w->cap_extents = cap;
  }
  w->extents[2 * w->extent_count] = len;
  w->extents[2 * w->extent_count + 1] = hole;
  w->extent_count++;
  return 1;
}

static void do_map(work_t *w) {
  int64_t pos = w->offset;
  int64_t end = w->offset + w->length;
  /* Small first: most ranges are one or two extents, and a 1 MiB calloc per call (maxExtents 65536)
   * cost a memset of fresh memory on every probe of a 1 MiB read. */
  w->cap_extents = w->max_extents < 16 ? w->max_extents : 16;
  w->extents = malloc(w->cap_extents * 2 * sizeof(int64_t));
  if (!w->extents) {
    w->err = ENOMEM;
    w->syscall = "calloc";
    return;
  }
  while (pos < end) {
    off_t data = lseek(w->fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) { /* no data at or after pos: the rest is a hole */
        add_extent(w, end - pos, 1);
        return;
      }
      w->err = errno;
      w->syscall = "lseek(SEEK_DATA)";
      return;
    }
    if (data > pos) {
      int64_t hole_end = data < end ? data : end;
      if (!add_extent(w, hole_end - pos, 1)) goto rest_as_data;
      pos = hole_end;
      if (pos >= end) return;
    }
    off_t hole = lseek(w->fd, pos, SEEK_HOLE);
    if (hole < 0) {
      if (errno == ENXIO) { /* pos is past EOF: a shorter file reads as zeroes */
        add_extent(w, end - pos, 1);
        return;
      }
      w->err = errno;
      w->syscall = "lseek(SEEK_HOLE)";
      return;
    }
    if (hole <= pos) hole = end; /* should not happen; be conservative */
    int64_t data_end = hole < end ? hole : end;
    if (!add_extent(w, data_end - pos, 0)) goto rest_as_data;
    pos = data_end;
  }
  return;
rest_as_data:
  /* Too many extents: turn the last one into data reaching the end of the range. Data is always a
   * safe answer (it only costs the client a read of zeroes). */
  {
    int64_t covered = 0;
    for (size_t i = 0; i + 1 < w->extent_count; i++) covered += w->extents[2 * i];
    w->extents[2 * (w->extent_count - 1)] = w->length - covered;
    w->extents[2 * (w->extent_count - 1) + 1] = 0;
  }
}

static void do_dgram(work_t *w) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t plen = strlen(w->path);
  if (plen == 0 || plen >= sizeof addr.sun_path) {
    w->err = ENAMETOOLONG;
    w->syscall = "sendto";
    return;
  }
  memcpy(addr.sun_path, w->path, plen);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0'; /* abstract namespace */
  socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                               (w->path[0] == '@' ? 0 : 1));
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    w->err = errno;
    w->syscall = "socket";
    return;
  }
  ssize_t n;
  do {
    n = sendto(s, w->message, w->message_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, alen);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    w->err = errno;
    w->syscall = "sendto";
  }
  close(s);
}

static void execute(napi_env env, void *data) {
  (void)env;
  work_t *w = data;
  int r;
  uint64_t range[2];
  switch (w->kind) {
  case OP_PUNCH:
    do {
      r = fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, w->offset, w->length);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      w->err = errno;
      w->syscall = "fallocate(PUNCH_HOLE)";
    }
    break;
  case OP_ZERO_RANGE:
    do {
      r = fallocate(w->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, w->offset, w->length);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      w->err = errno;
      w->syscall = "fallocate(ZERO_RANGE)";
    }
    break;
  case OP_SEEK: {
    off_t o = lseek(w->fd, w->offset, w->whence);
    if (o < 0) {
      if (errno == ENXIO) {
        w->result = -1;
      } else {
        w->err = errno;
        w->syscall = w->whence == SEEK_DATA ? "lseek(SEEK_DATA)" : "lseek(SEEK_HOLE)";
      }
    } else {
      w->result = o;
    }
    break;
  }
  case OP_MAP:
    do_map(w);
    break;
  case OP_DISCARD:
  case OP_ZEROOUT:
    range[0] = (uint64_t)w->offset;
    range[1] = (uint64_t)w->length;
    do {
      r = ioctl(w->fd, w->kind == OP_DISCARD ? BLKDISCARD : BLKZEROOUT, range);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      w->err = errno;
      w->syscall = w->kind == OP_DISCARD ? "ioctl(BLKDISCARD)" : "ioctl(BLKZEROOUT)";
    }
    break;
  case OP_DGRAM:
    do_dgram(w);
    break;
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  work_t *w = data;
  napi_value value = NULL;
  if (status != napi_ok && w->err == 0) {
    w->err = ECANCELED;
    w->syscall = "napi_async_work";
  }
  if (w->err != 0) {
    napi_value msg, errno_value, syscall_value;
    char buf[256];
    snprintf(buf, sizeof buf, "%s: %s", w->syscall, strerror(w->err));
    napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &value);
    napi_create_int32(env, w->err, &errno_value);
    napi_set_named_property(env, value, "errno", errno_value);
    napi_create_string_utf8(env, w->syscall, NAPI_AUTO_LENGTH, &syscall_value);
    napi_set_named_property(env, value, "syscall", syscall_value);
    napi_reject_deferred(env, w->deferred, value);
  } else {
    switch (w->kind) {
    case OP_SEEK:
      napi_create_int64(env, w->result, &value);
      break;
    case OP_MAP:
      napi_create_array_with_length(env, w->extent_count * 2, &value);
      for (size_t i = 0; i < w->extent_count * 2; i++) {
        napi_value n;
        napi_create_int64(env, w->extents[i], &n);
        napi_set_element(env, value, (uint32_t)i, n);
      }
      break;
    default:
      napi_get_undefined(env, &value);
    }
    napi_resolve_deferred(env, w->deferred, value);
  }
  napi_delete_async_work(env, w->work);
  free(w->extents);
  free(w->path);
  free(w->message);
  free(w);
}

static napi_value queue(napi_env env, work_t *w, const char *name) {
  napi_value promise, resource_name;
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    free(w->path);
    free(w->message);
    free(w);
    napi_throw_error(env, NULL, "remapd_native: cannot create promise");
    return NULL;
  }
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  if (napi_create_async_work(env, NULL, resource_name, execute, complete, w, &w->work) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok) {
    napi_throw_error(env, NULL, "remapd_native: cannot queue async work");
    return NULL; /* the promise is leaked, but we are throwing */
  }
  return promise;
}

static int get_i64(napi_env env, napi_value v, const char *what, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < 0 || d > 9007199254740991.0 ||
      (double)(int64_t)d != d) {
    char buf[128];
    snprintf(buf, sizeof buf, "remapd_native: %s must be a non-negative safe integer", what);
    napi_throw_type_error(env, NULL, buf);
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

/* fn(fd, offset, length) */
static napi_value range_op(napi_env env, napi_callback_info info, enum op_kind kind,
                           const char *name) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, offset, length;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "remapd_native: expected (fd, offset, length)");
    return NULL;
  }
  if (!get_i64(env, argv[0], "fd", &fd) || !get_i64(env, argv[1], "offset", &offset) ||
      !get_i64(env, argv[2], "length", &length))
    return NULL;
  work_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "remapd_native: out of memory");
    return NULL;
  }
  w->kind = kind;
  w->fd = (int)fd;
  w->offset = offset;
  w->length = length;
  return queue(env, w, name);
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  return range_op(env, info, OP_PUNCH, "remapd:punchHole");
}
static napi_value zero_range(napi_env env, napi_callback_info info) {
  return range_op(env, info, OP_ZERO_RANGE, "remapd:zeroRange");
}
static napi_value blk_discard(napi_env env, napi_callback_info info) {
  return range_op(env, info, OP_DISCARD, "remapd:blkDiscard");
}
static napi_value blk_zeroout(napi_env env, napi_callback_info info) {
  return range_op(env, info, OP_ZEROOUT, "remapd:blkZeroout");
}

/* seek(fd, offset, whence: 'data' | 'hole') */
static napi_value seek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t fd, offset;
  char whence[8] = {0};
  size_t wl;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || !get_i64(env, argv[0], "fd", &fd) || !get_i64(env, argv[1], "offset", &offset))
    return NULL;
  if (napi_get_value_string_utf8(env, argv[2], whence, sizeof whence, &wl) != napi_ok ||
      (strcmp(whence, "data") != 0 && strcmp(whence, "hole") != 0)) {
    napi_throw_type_error(env, NULL, "remapd_native: whence must be 'data' or 'hole'");
    return NULL;
  }
  work_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "remapd_native: out of memory");
    return NULL;
  }
  w->kind = OP_SEEK;
  w->fd = (int)fd;
  w->offset = offset;
  w->whence = whence[0] == 'd' ? SEEK_DATA : SEEK_HOLE;
  return queue(env, w, "remapd:seek");
}

/* mapExtents(fd, offset, length, maxExtents) */
static napi_value map_extents(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int64_t fd, offset, length, max_extents;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "remapd_native: expected (fd, offset, length, maxExtents)");
    return NULL;
  }
  if (!get_i64(env, argv[0], "fd", &fd) || !get_i64(env, argv[1], "offset", &offset) ||
      !get_i64(env, argv[2], "length", &length) ||
      !get_i64(env, argv[3], "maxExtents", &max_extents))
    return NULL;
  if (max_extents < 1 || max_extents > (1 << 24)) {
    napi_throw_range_error(env, NULL, "remapd_native: maxExtents must be in 1..16777216");
    return NULL;
  }
  work_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "remapd_native: out of memory");
    return NULL;
  }
  w->kind = OP_MAP;
  w->fd = (int)fd;
  w->offset = offset;
  w->length = length;
  w->max_extents = (size_t)max_extents;
  return queue(env, w, "remapd:mapExtents");
}

/* sendDatagram(path: string, message: Buffer | string) */
/* flockNb(fd, exclusive): flock(fd, (exclusive ? LOCK_EX : LOCK_UN) | LOCK_NB). Synchronous: with LOCK_NB
 * the call never waits. Returns false when another open file description holds the lock. */
static napi_value flock_nb(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  int32_t fd;
  bool exclusive;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_value_bool(env, argv[1], &exclusive) != napi_ok) {
    napi_throw_type_error(env, NULL, "remapd_native: flockNb(fd, exclusive)");
    return NULL;
  }
  int rc;
  do {
    rc = flock(fd, (exclusive ? LOCK_EX : LOCK_UN) | LOCK_NB);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EWOULDBLOCK) {
    int err = errno;
    napi_value msg, e, errno_value, syscall_value;
    char buf[128];
    snprintf(buf, sizeof buf, "flock: %s", strerror(err));
    napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &e);
    napi_create_int32(env, err, &errno_value);
    napi_set_named_property(env, e, "errno", errno_value);
    napi_create_string_utf8(env, "flock", NAPI_AUTO_LENGTH, &syscall_value);
    napi_set_named_property(env, e, "syscall", syscall_value);
    napi_throw(env, e);
    return NULL;
  }
  napi_get_boolean(env, rc == 0, &result);
  return result;
}


static napi_value send_datagram(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  size_t plen;
  bool is_buffer;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "remapd_native: expected (path, message)");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &plen) != napi_ok) {
    napi_throw_type_error(env, NULL, "remapd_native: path must be a string");
    return NULL;
  }
  work_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "remapd_native: out of memory");
    return NULL;
  }
  w->kind = OP_DGRAM;
  w->path = malloc(plen + 1);
  if (!w->path) goto oom;
  napi_get_value_string_utf8(env, argv[0], w->path, plen + 1, &plen);
  CHECK(napi_is_buffer(env, argv[1], &is_buffer));
  if (is_buffer) {
    void *data;
    size_t len;
    CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
    w->message = malloc(len ? len : 1);
    if (!w->message) goto oom;
    memcpy(w->message, data, len);
    w->message_len = len;
  } else {
    size_t len;
    if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &len) != napi_ok) {
      free(w->path);
      free(w);
      napi_throw_type_error(env, NULL, "remapd_native: message must be a Buffer or a string");
      return NULL;
    }
    w->message = malloc(len + 1);
    if (!w->message) goto oom;
    napi_get_value_string_utf8(env, argv[1], w->message, len + 1, &len);
    w->message_len = len;
  }
  return queue(env, w, "remapd:sendDatagram");
oom:
  free(w->path);
  free(w->message);
  free(w);
  napi_throw_error(env, NULL, "remapd_native: out of memory");
  return NULL;
}


/* storage/native/io_lane.c: reads, writes and syncs on per-backend thread lanes. */
napi_status io_lane_register(napi_env env, napi_value exports);
/* storage/native/aio_lane.c: Linux AIO fast path of direct lanes. */
napi_status aio_lane_register(napi_env env, napi_value exports);

napi_value remapd_register_restart(napi_env env, napi_value exports); /* fd_passing.c */

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zeroRange", NULL, zero_range, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seek", NULL, seek, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapExtents", NULL, map_extents, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blkDiscard", NULL, blk_discard, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blkZeroout", NULL, blk_zeroout, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendDatagram", NULL, send_datagram, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flockNb", NULL, flock_nb, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok ||
      io_lane_register(env, exports) != napi_ok || aio_lane_register(env, exports) != napi_ok)
    return NULL;
  return remapd_register_restart(env, exports);
}
