/**
 * Typed access to the addon's restart helpers (storage/native/fd_passing.c and nbd_netlink.c):
 * fd passing to systemd's file descriptor store, and a raw generic-netlink socket for `remapd attach`.
 * Each is undefined when the addon is missing or was built without them.
 */
import { addonExports } from '../storage/native';

type Fn<T> = T | undefined;

function pick<T>(name: string): Fn<T> {
  const f = addonExports?.[name];
  return typeof f === 'function' ? (f.bind(addonExports) as T) : undefined;
}

/** One datagram to a Unix socket path with descriptors attached (sd_notify FDSTORE=1). */
export const sendFds = pick<(path: string, message: string | Buffer, fds: number[]) => void>('sendFds');
/** sd_notify BARRIER=1: true once the manager has processed every earlier message. */
export const notifyBarrier = pick<(path: string, timeoutMs: number) => boolean>('notifyBarrier');

export const netlinkOpen = pick<() => number>('netlinkOpen');
export const netlinkSend = pick<(fd: number, bytes: Buffer) => void>('netlinkSend');
export const netlinkRecv = pick<(fd: number, timeoutMs: number) => Buffer | null>('netlinkRecv');
export const netlinkJoin = pick<(fd: number, group: number) => void>('netlinkJoin');
export const netlinkClose = pick<(fd: number) => void>('netlinkClose');
