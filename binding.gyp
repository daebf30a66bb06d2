{
  "targets": [
    {
      "target_name": "remapd_native",
      "sources": ["storage/native/remapd_native.c", "storage/native/io_lane.c", "storage/native/aio_lane.c", "storage/native/fd_passing.c", "storage/native/nbd_netlink.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-lpthread"]
    }
  ]
}
