/**
 * Generic-netlink message encoding and decoding, for the kernel nbd driver's "nbd" family
 * (include/uapi/linux/nbd-netlink.h) and the generic-netlink controller that resolves family names.
 * Pure functions over Buffers, so they are unit-tested without a kernel; daemon/nbd-netlink.ts moves
 * the bytes through the addon's raw netlink socket.
 *
 * Layout (all integers in the host's byte order, little-endian on the machines remapd targets):
 *   nlmsghdr   u32 length (header included), u16 type (family id), u16 flags, u32 seq, u32 port id
 *   genlmsghdr u8 command, u8 version, u16 reserved
 *   attributes u16 length (header included), u16 type (bit 15 = nested), payload, padding to 4 bytes
 */
import { endianness } from 'node:os';

if (endianness() !== 'LE') throw new Error('netlink-codec: only little-endian hosts are supported');

export const NLMSG_HDRLEN = 16;
export const GENL_HDRLEN = 4;
export const NLA_HDRLEN = 4;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLMSG_ERROR = 0x2;
export const NLMSG_DONE = 0x3;
const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;

/** The generic-netlink controller (linux/genetlink.h). */
export const GENL_ID_CTRL = 0x10;
export const Ctrl = {
  CMD_GETFAMILY: 3,
  ATTR_FAMILY_ID: 1,
  ATTR_FAMILY_NAME: 2,
  ATTR_VERSION: 3,
  ATTR_MAXATTR: 5,
  ATTR_MCAST_GROUPS: 7,
  ATTR_MCAST_GRP_NAME: 1,
  ATTR_MCAST_GRP_ID: 2,
} as const;

/** The nbd family (linux/nbd-netlink.h). */
export const NBD_GENL_FAMILY_NAME = 'nbd';
export const NBD_GENL_VERSION = 1;
export const NBD_MCAST_GROUP_NAME = 'nbd_mc_group';
export const NbdCmd = { CONNECT: 1, DISCONNECT: 2, RECONFIGURE: 3, LINK_DEAD: 4, STATUS: 5 } as const;
export const NbdAttr = {
  INDEX: 1,
  SIZE_BYTES: 2,
  BLOCK_SIZE_BYTES: 3,
  TIMEOUT: 4,
  SERVER_FLAGS: 5,
  CLIENT_FLAGS: 6,
  SOCKETS: 7,
  DEAD_CONN_TIMEOUT: 8,
  DEVICE_LIST: 9,
  BACKEND_IDENTIFIER: 10,
} as const;
const NBD_SOCK_ITEM = 1;
const NBD_SOCK_FD = 1;

export type Attr =
  | { readonly type: number; readonly u16: number }
  | { readonly type: number; readonly u32: number }
  | { readonly type: number; readonly u64: number | bigint }
  | { readonly type: number; readonly str: string }
  | { readonly type: number; readonly nested: readonly Attr[] };

const pad4 = (n: number): number => (n + 3) & ~3;

export function encodeAttrs(attrs: readonly Attr[]): Buffer {
  const parts: Buffer[] = [];
  for (const a of attrs) {
    let payload: Buffer;
    let type = a.type;
    if ('u16' in a) {
      payload = Buffer.alloc(2);
      payload.writeUInt16LE(a.u16);
    } else if ('u32' in a) {
      payload = Buffer.alloc(4);
      payload.writeUInt32LE(a.u32 >>> 0);
    } else if ('u64' in a) {
      payload = Buffer.alloc(8);
      payload.writeBigUInt64LE(BigInt(a.u64));
    } else if ('str' in a) {
      payload = Buffer.from(`${a.str}\0`, 'utf8');
    } else {
      payload = encodeAttrs(a.nested);
      type |= NLA_F_NESTED;
    }
    const head = Buffer.alloc(NLA_HDRLEN);
    head.writeUInt16LE(NLA_HDRLEN + payload.length, 0);
    head.writeUInt16LE(type, 2);
    parts.push(head, payload, Buffer.alloc(pad4(payload.length) - payload.length));
  }
  return Buffer.concat(parts);
}

/** One generic-netlink request. */
export function encodeGenl(
  familyId: number,
  cmd: number,
  version: number,
  seq: number,
  attrs: readonly Attr[],
  flags = NLM_F_REQUEST | NLM_F_ACK,
): Buffer {
  const body = encodeAttrs(attrs);
  const msg = Buffer.alloc(NLMSG_HDRLEN + GENL_HDRLEN + body.length);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(familyId, 4);
  msg.writeUInt16LE(flags, 6);
  msg.writeUInt32LE(seq >>> 0, 8);
  msg.writeUInt32LE(0, 12);
  msg.writeUInt8(cmd, 16);
  msg.writeUInt8(version, 17);
  body.copy(msg, NLMSG_HDRLEN + GENL_HDRLEN);
  return msg;
}

export interface NlMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly payload: Buffer;
}

/** The messages in one datagram. Throws on a malformed length. */
export function decodeMessages(buf: Buffer): NlMessage[] {
  const out: NlMessage[] = [];
  let at = 0;
  while (at + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(at);
    if (len < NLMSG_HDRLEN || at + len > buf.length) throw new Error(`malformed netlink message length ${len}`);
    out.push({
      type: buf.readUInt16LE(at + 4),
      flags: buf.readUInt16LE(at + 6),
      seq: buf.readUInt32LE(at + 8),
      payload: buf.subarray(at + NLMSG_HDRLEN, at + len),
    });
    at += pad4(len);
  }
  return out;
}

/** NLMSG_ERROR: the errno it carries (0 = ACK), as a positive number. */
export function errorOf(m: NlMessage): number {
  if (m.type !== NLMSG_ERROR || m.payload.length < 4) throw new Error('not an NLMSG_ERROR message');
  return -m.payload.readInt32LE(0);
}

/** Attributes by type (the last of a repeated type wins; use decodeAttrList for arrays). */
export function decodeAttrs(buf: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  for (const [type, value] of decodeAttrList(buf)) m.set(type, value);
  return m;
}

export function decodeAttrList(buf: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let at = 0;
  while (at + NLA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(at);
    if (len < NLA_HDRLEN || at + len > buf.length) throw new Error(`malformed netlink attribute length ${len}`);
    out.push([buf.readUInt16LE(at + 2) & NLA_TYPE_MASK, buf.subarray(at + NLA_HDRLEN, at + len)]);
    at += pad4(len);
  }
  return out;
}

export interface GenlMessage {
  readonly cmd: number;
  readonly version: number;
  readonly attrs: Map<number, Buffer>;
}

export function decodeGenl(m: NlMessage): GenlMessage {
  if (m.payload.length < GENL_HDRLEN) throw new Error('short generic netlink message');
  return { cmd: m.payload.readUInt8(0), version: m.payload.readUInt8(1), attrs: decodeAttrs(m.payload.subarray(GENL_HDRLEN)) };
}

export const attrString = (b: Buffer): string => b.toString('utf8').replace(/\0.*$/s, '');

export interface FamilyInfo {
  readonly id: number;
  readonly version: number;
  /** Highest attribute number the kernel's family knows (nbd: 10 = BACKEND_IDENTIFIER, Linux >= 5.14). */
  readonly maxAttr: number;
  readonly groups: ReadonlyMap<string, number>;
}

export function encodeGetFamily(name: string, seq: number): Buffer {
  return encodeGenl(GENL_ID_CTRL, Ctrl.CMD_GETFAMILY, 1, seq, [{ type: Ctrl.ATTR_FAMILY_NAME, str: name }]);
}

export function decodeFamily(g: GenlMessage): FamilyInfo {
  const id = g.attrs.get(Ctrl.ATTR_FAMILY_ID);
  if (!id) throw new Error('controller reply without a family id');
  const groups = new Map<string, number>();
  const mc = g.attrs.get(Ctrl.ATTR_MCAST_GROUPS);
  if (mc) {
    for (const [, grp] of decodeAttrList(mc)) {
      const a = decodeAttrs(grp);
      const gname = a.get(Ctrl.ATTR_MCAST_GRP_NAME);
      const gid = a.get(Ctrl.ATTR_MCAST_GRP_ID);
      if (gname && gid) groups.set(attrString(gname), gid.readUInt32LE(0));
    }
  }
  return {
    id: id.readUInt16LE(0),
    version: g.attrs.get(Ctrl.ATTR_VERSION)?.readUInt32LE(0) ?? 0,
    maxAttr: g.attrs.get(Ctrl.ATTR_MAXATTR)?.readUInt32LE(0) ?? 0,
    groups,
  };
}

export interface NbdConnectRequest {
  /** /dev/nbdN index; undefined lets the kernel pick a free device. */
  readonly index?: number;
  readonly sizeBytes: number;
  readonly blockSizeBytes: number;
  readonly serverFlags: number;
  /** Seconds before a request without a reply is requeued (0 = the block layer's 30 s). */
  readonly timeoutSec: number;
  /** Seconds the kernel queues I/O while no connection is alive, waiting for RECONFIGURE. */
  readonly deadConnTimeoutSec: number;
  readonly fds: readonly number[];
  /** Only sent when the kernel knows the attribute (FamilyInfo.maxAttr >= BACKEND_IDENTIFIER). */
  readonly backendIdentifier?: string;
}

const sockets = (fds: readonly number[]): Attr => ({
  type: NbdAttr.SOCKETS,
  nested: fds.map((fd) => ({ type: NBD_SOCK_ITEM, nested: [{ type: NBD_SOCK_FD, u32: fd }] })),
});

export function encodeNbdConnect(familyId: number, seq: number, r: NbdConnectRequest): Buffer {
  const attrs: Attr[] = [];
  if (r.index !== undefined) attrs.push({ type: NbdAttr.INDEX, u32: r.index });
  attrs.push(
    { type: NbdAttr.SIZE_BYTES, u64: r.sizeBytes },
    { type: NbdAttr.BLOCK_SIZE_BYTES, u64: r.blockSizeBytes },
    { type: NbdAttr.SERVER_FLAGS, u64: r.serverFlags },
    { type: NbdAttr.TIMEOUT, u64: r.timeoutSec },
    { type: NbdAttr.DEAD_CONN_TIMEOUT, u64: r.deadConnTimeoutSec },
    sockets(r.fds),
  );
  if (r.backendIdentifier !== undefined) attrs.push({ type: NbdAttr.BACKEND_IDENTIFIER, str: r.backendIdentifier });
  return encodeGenl(familyId, NbdCmd.CONNECT, NBD_GENL_VERSION, seq, attrs);
}

/** New sockets for the dead connections of device `index` (the kernel replaces dead ones only). */
export function encodeNbdReconfigure(
  familyId: number,
  seq: number,
  index: number,
  fds: readonly number[],
  backendIdentifier?: string,
): Buffer {
  const attrs: Attr[] = [{ type: NbdAttr.INDEX, u32: index }, sockets(fds)];
  if (backendIdentifier !== undefined) attrs.push({ type: NbdAttr.BACKEND_IDENTIFIER, str: backendIdentifier });
  return encodeGenl(familyId, NbdCmd.RECONFIGURE, NBD_GENL_VERSION, seq, attrs);
}

export function encodeNbdDisconnect(familyId: number, seq: number, index: number): Buffer {
  return encodeGenl(familyId, NbdCmd.DISCONNECT, NBD_GENL_VERSION, seq, [{ type: NbdAttr.INDEX, u32: index }]);
}

/** The device index of an NBD_CMD_CONNECT reply or an NBD_CMD_LINK_DEAD multicast. */
export function nbdIndexOf(g: GenlMessage): number | undefined {
  return g.attrs.get(NbdAttr.INDEX)?.readUInt32LE(0);
}
