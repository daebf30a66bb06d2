/**
 * Talking to the kernel nbd driver over generic netlink: resolve the "nbd" family, CONNECT,
 * RECONFIGURE, DISCONNECT, and watch the multicast group for NBD_CMD_LINK_DEAD. Encoding lives in
 * daemon/netlink-codec.ts; the socket is the addon's (storage/native/nbd_netlink.c).
 */
import {
  NBD_GENL_FAMILY_NAME,
  NBD_MCAST_GROUP_NAME,
  NLMSG_DONE,
  NLMSG_ERROR,
  NbdAttr,
  NbdCmd,
  decodeFamily,
  decodeGenl,
  decodeMessages,
  encodeGetFamily,
  encodeNbdConnect,
  encodeNbdDisconnect,
  encodeNbdReconfigure,
  errorOf,
  nbdIndexOf,
  type FamilyInfo,
  type GenlMessage,
  type NbdConnectRequest,
} from './netlink-codec';
import { netlinkClose, netlinkJoin, netlinkOpen, netlinkRecv, netlinkSend } from './restart-native';
import { errnoName } from '../storage/native';

/** A kernel refusal: `errno` is the positive error number, `code` its name. */
export class NetlinkError extends Error {
  constructor(
    readonly errno: number,
    what: string,
  ) {
    super(`${what}: ${errnoName(errno)}`);
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

export class GenlSocket {
  private readonly fd: number;
  private seq = Math.floor(Date.now() / 1000) & 0xffff;

  constructor() {
    if (!netlinkOpen) throw new Error('the native addon (with netlink support) is not available: rebuild it with `npx node-gyp rebuild`');
    this.fd = netlinkOpen();
  }

  close(): void {
    netlinkClose!(this.fd);
  }

  join(groupId: number): void {
    netlinkJoin!(this.fd, groupId);
  }

  /**
   * Send a request and collect its replies until the kernel's ACK (or error). Multicast messages that
   * arrive meanwhile go to `onOther`.
   */
  request(
    build: (seq: number) => Buffer,
    what: string,
    onOther?: (g: GenlMessage, type: number) => void,
    timeoutMs = 10_000,
  ): GenlMessage[] {
    const seq = ++this.seq;
    netlinkSend!(this.fd, build(seq));
    const replies: GenlMessage[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: no answer from the kernel within ${timeoutMs} ms`);
      const buf = netlinkRecv!(this.fd, left);
      if (!buf) continue;
      for (const m of decodeMessages(buf)) {
        if (m.seq !== seq) {
          if (m.type !== NLMSG_ERROR && m.type !== NLMSG_DONE) onOther?.(decodeGenl(m), m.type);
          continue;
        }
        if (m.type === NLMSG_ERROR) {
          const errno = errorOf(m);
          if (errno !== 0) throw new NetlinkError(errno, what);
          return replies;
        }
        if (m.type === NLMSG_DONE) return replies;
        replies.push(decodeGenl(m));
      }
    }
  }

  /** Wait up to timeoutMs for one datagram of unsolicited (multicast) messages. */
  poll(timeoutMs: number): { g: GenlMessage; type: number }[] {
    const buf = netlinkRecv!(this.fd, timeoutMs);
    if (!buf) return [];
    return decodeMessages(buf)
      .filter((m) => m.type !== NLMSG_ERROR && m.type !== NLMSG_DONE)
      .map((m) => ({ g: decodeGenl(m), type: m.type }));
  }

  resolveFamily(name: string): FamilyInfo {
    const [reply] = this.request((seq) => encodeGetFamily(name, seq), `resolving the generic netlink family '${name}'`);
    if (!reply) throw new Error(`no answer resolving '${name}'`);
    return decodeFamily(reply);
  }
}

/** The kernel nbd driver, through its netlink family. */
export class NbdNetlink {
  readonly family: FamilyInfo;

  constructor(private readonly sock: GenlSocket = new GenlSocket()) {
    try {
      this.family = sock.resolveFamily(NBD_GENL_FAMILY_NAME);
    } catch (err) {
      if (err instanceof NetlinkError && err.code === 'ENOENT') {
        throw new Error('the kernel has no nbd driver loaded (run `modprobe nbd`; nbd netlink needs Linux >= 4.12)', { cause: err });
      }
      throw err;
    }
  }

  /** The kernel enforces the backend identifier itself (Linux >= 5.14). */
  get knowsBackendIdentifier(): boolean {
    return this.family.maxAttr >= NbdAttr.BACKEND_IDENTIFIER;
  }

  connect(r: NbdConnectRequest): number {
    const replies = this.sock.request((seq) => encodeNbdConnect(this.family.id, seq, r), 'NBD_CMD_CONNECT');
    const index = replies.map(nbdIndexOf).find((i) => i !== undefined);
    if (index === undefined) throw new Error('NBD_CMD_CONNECT: the kernel did not say which device it used');
    return index;
  }

  reconfigure(index: number, fds: readonly number[], backendIdentifier?: string): void {
    this.sock.request(
      (seq) => encodeNbdReconfigure(this.family.id, seq, index, fds, this.knowsBackendIdentifier ? backendIdentifier : undefined),
      'NBD_CMD_RECONFIGURE',
    );
  }

  disconnect(index: number): void {
    this.sock.request((seq) => encodeNbdDisconnect(this.family.id, seq, index), 'NBD_CMD_DISCONNECT');
  }

  /** Join the nbd multicast group; then pollLinkDead() reports NBD_CMD_LINK_DEAD device indexes. */
  watchLinkDead(): void {
    const group = this.family.groups.get(NBD_MCAST_GROUP_NAME);
    if (group === undefined) throw new Error(`the nbd family has no '${NBD_MCAST_GROUP_NAME}' multicast group`);
    this.sock.join(group);
  }

  pollLinkDead(timeoutMs: number): number[] {
    return this.sock
      .poll(timeoutMs)
      .filter((m) => m.type === this.family.id && m.g.cmd === NbdCmd.LINK_DEAD)
      .map((m) => nbdIndexOf(m.g))
      .filter((i): i is number => i !== undefined);
  }

  close(): void {
    this.sock.close();
  }
}
