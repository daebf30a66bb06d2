/*
 * remapd native helpers for restarts: passing file descriptors to the service manager.
 *
 *   sendFds(path, message, fds)     one AF_UNIX datagram carrying `fds` as SCM_RIGHTS (sd_notify
 *                                   FDSTORE=1); '@' = abstract socket          -> undefined (sync)
 *   notifyBarrier(path, timeoutMs)  sd_notify BARRIER=1: sends the write end of a pipe and waits until
 *                                   the manager closes it, i.e. has processed every earlier message
 *                                                                              -> boolean (sync)
 *
 * Both are short and run on the calling thread: they are used once, while the daemon hands over and
 * has nothing else to do. Failures throw an Error with `errno` and `syscall`, like the async helpers.
 * Registered into the addon's exports by remapd_register_restart(), called from remapd_native.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PASSED_FDS 253 /* SCM_MAX_FD */

napi_value remapd_nbd_netlink_register(napi_env env, napi_value exports);

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  char buf[256];
  napi_value msg, value, errno_value, syscall_value;
  snprintf(buf, sizeof buf, "%s: %s", syscall, strerror(err));
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &value);
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, value, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, value, "syscall", syscall_value);
  napi_throw(env, value);
  return NULL;
}

/* Fills `addr` for a socket path ('@' = abstract). Returns the address length, 0 if it does not fit. */
static socklen_t unix_address(const char *path, struct sockaddr_un *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  size_t plen = strlen(path);
  if (plen == 0 || plen >= sizeof addr->sun_path) return 0;
  memcpy(addr->sun_path, path, plen);
  if (path[0] == '@') addr->sun_path[0] = '\0';
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
}

/* Sends one datagram with `nfds` descriptors attached. 0 or an errno. */
static int send_with_fds(const char *path, const void *data, size_t len, const int *fds, size_t nfds) {
  struct sockaddr_un addr;
  socklen_t alen = unix_address(path, &addr);
  if (!alen) return ENAMETOOLONG;
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_PASSED_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_name = &addr, .msg_namelen = alen, .msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(s, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : 0;
  close(s);
  return err;
}

static int get_string(napi_env env, napi_value v, char *out, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, out, size, &len) != napi_ok) return 0;
  return len + 1 < size;
}

static napi_value send_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "remapd_native: sendFds(path, message, fds)");
    return NULL;
  }
  char path[128];
  if (!get_string(env, argv[0], path, sizeof path)) return throw_errno(env, ENAMETOOLONG, "sendmsg");
  char *data = NULL;
  size_t len = 0;
  bool is_buffer = false;
  napi_is_buffer(env, argv[1], &is_buffer);
  char *owned = NULL;
  if (is_buffer) {
    napi_get_buffer_info(env, argv[1], (void **)&data, &len);
  } else {
    if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &len) != napi_ok) {
      napi_throw_type_error(env, NULL, "remapd_native: sendFds message must be a string or Buffer");
      return NULL;
    }
    owned = malloc(len + 1);
    if (!owned) return throw_errno(env, ENOMEM, "malloc");
    napi_get_value_string_utf8(env, argv[1], owned, len + 1, &len);
    data = owned;
  }
  uint32_t nfds = 0;
  bool is_array = false;
  napi_is_array(env, argv[2], &is_array);
  if (!is_array || napi_get_array_length(env, argv[2], &nfds) != napi_ok || nfds > MAX_PASSED_FDS) {
    free(owned);
    napi_throw_type_error(env, NULL, "remapd_native: sendFds fds must be an array of at most 253 descriptors");
    return NULL;
  }
  int fds[MAX_PASSED_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value el;
    if (napi_get_element(env, argv[2], i, &el) != napi_ok || napi_get_value_int32(env, el, &fds[i]) != napi_ok || fds[i] < 0) {
      free(owned);
      napi_throw_type_error(env, NULL, "remapd_native: sendFds fds must be descriptor numbers");
      return NULL;
    }
  }
  int err = send_with_fds(path, data, len, fds, nfds);
  free(owned);
  if (err) return throw_errno(env, err, "sendmsg");
  return NULL;
}

static napi_value notify_barrier(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "remapd_native: notifyBarrier(path, timeoutMs)");
    return NULL;
  }
  char path[128];
  if (!get_string(env, argv[0], path, sizeof path)) return throw_errno(env, ENAMETOOLONG, "sendmsg");
  int32_t timeout_ms = 0;
  napi_get_value_int32(env, argv[1], &timeout_ms);
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return throw_errno(env, errno, "pipe2");
  static const char msg[] = "BARRIER=1";
  int err = send_with_fds(path, msg, sizeof msg - 1, &p[1], 1);
  close(p[1]);
  if (err) {
    close(p[0]);
    return throw_errno(env, err, "sendmsg");
  }
  /* The manager closes its copy of the write end once it has processed the message: POLLHUP. */
  struct pollfd pfd = {.fd = p[0], .events = 0};
  int r;
  do {
    r = poll(&pfd, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  close(p[0]);
  napi_value result;
  napi_get_boolean(env, r > 0 && (pfd.revents & POLLHUP), &result);
  return result;
}

/* Adds the restart helpers (and the nbd netlink ones) to the addon's exports. */
napi_value remapd_register_restart(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"sendFds", NULL, send_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"notifyBarrier", NULL, notify_barrier, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return remapd_nbd_netlink_register(env, exports);
}
