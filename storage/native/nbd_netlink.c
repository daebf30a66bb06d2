/*
 * remapd native helpers for `remapd attach`: a raw generic-netlink socket. Message encoding and
 * decoding (nlmsghdr, genlmsghdr, attributes) is done in TypeScript (daemon/netlink-codec.ts), where it
 * is unit-tested; this file only moves bytes, which Node's net module cannot do for AF_NETLINK.
 *
 *   netlinkOpen()                   socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC), bound   -> fd
 *   netlinkSend(fd, bytes)          send one message to the kernel                         -> undefined
 *   netlinkRecv(fd, timeoutMs)      one datagram, or null after timeoutMs without one      -> Buffer|null
 *   netlinkJoin(fd, groupId)        NETLINK_ADD_MEMBERSHIP (multicast group, e.g. nbd_mc_group)
 *   netlinkClose(fd)
 *
 * All synchronous: the attach process does nothing else while it waits for the kernel, and it polls
 * for multicast messages with short timeouts from a timer. Errors throw with `errno` and `syscall`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <node_api.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static napi_value nl_throw(napi_env env, int err, const char *syscall) {
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

static bool int_args(napi_env env, napi_callback_info info, size_t want, int32_t *out, napi_value *argv) {
  size_t argc = 3;
  napi_value local[3];
  if (!argv) argv = local;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) return false;
  for (size_t i = 0; i < want; i++) {
    napi_valuetype t;
    napi_typeof(env, argv[i], &t);
    if (t == napi_number && napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) return false;
  }
  return true;
}

static napi_value netlink_open(napi_env env, napi_callback_info info) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
  if (fd < 0) return nl_throw(env, errno, "socket");
  struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    return nl_throw(env, err, "bind");
  }
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

static napi_value netlink_send(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t a[1];
  if (!int_args(env, info, 2, a, argv)) {
    napi_throw_type_error(env, NULL, "remapd_native: netlinkSend(fd, bytes)");
    return NULL;
  }
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "remapd_native: netlinkSend bytes must be a Buffer");
    return NULL;
  }
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;
  do {
    n = sendto(a[0], data, len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return nl_throw(env, errno, "sendto");
  return NULL;
}

static napi_value netlink_recv(napi_env env, napi_callback_info info) {
  int32_t a[2] = {0, 0};
  if (!int_args(env, info, 2, a, NULL)) {
    napi_throw_type_error(env, NULL, "remapd_native: netlinkRecv(fd, timeoutMs)");
    return NULL;
  }
  struct pollfd pfd = {.fd = a[0], .events = POLLIN};
  int r;
  do {
    r = poll(&pfd, 1, a[1]);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return nl_throw(env, errno, "poll");
  napi_value v;
  if (r == 0) {
    napi_get_null(env, &v);
    return v;
  }
  size_t cap = 65536;
  char *buf = malloc(cap);
  if (!buf) return nl_throw(env, ENOMEM, "malloc");
  ssize_t n;
  do {
    n = recv(a[0], buf, cap, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    free(buf);
    if (err == EAGAIN) {
      napi_get_null(env, &v);
      return v;
    }
    return nl_throw(env, err, "recv");
  }
  void *out;
  napi_create_buffer_copy(env, (size_t)n, buf, &out, &v);
  free(buf);
  return v;
}

static napi_value netlink_join(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (!int_args(env, info, 2, a, NULL)) {
    napi_throw_type_error(env, NULL, "remapd_native: netlinkJoin(fd, groupId)");
    return NULL;
  }
  int group = a[1];
  if (setsockopt(a[0], SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) return nl_throw(env, errno, "setsockopt");
  return NULL;
}

static napi_value netlink_close(napi_env env, napi_callback_info info) {
  int32_t a[1];
  if (!int_args(env, info, 1, a, NULL)) {
    napi_throw_type_error(env, NULL, "remapd_native: netlinkClose(fd)");
    return NULL;
  }
  close(a[0]);
  return NULL;
}

napi_value remapd_nbd_netlink_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"netlinkOpen", NULL, netlink_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netlinkSend", NULL, netlink_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netlinkRecv", NULL, netlink_recv, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netlinkJoin", NULL, netlink_join, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netlinkClose", NULL, netlink_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
