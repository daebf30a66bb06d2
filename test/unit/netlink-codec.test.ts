/**
 * Generic-netlink encoding for `remapd attach` (daemon/netlink-codec.ts), byte for byte against the
 * layout of include/uapi/linux/nbd-netlink.h, plus the real netlink socket of the addon against this
 * host's kernel (the controller family always exists; the nbd family only where the module is loaded).
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import {
  Ctrl,
  GENL_ID_CTRL,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NbdAttr,
  NbdCmd,
  decodeAttrList,
  decodeAttrs,
  decodeFamily,
  decodeGenl,
  decodeMessages,
  encodeAttrs,
  encodeGenl,
  encodeNbdConnect,
  encodeNbdReconfigure,
  errorOf,
  nbdIndexOf,
  attrString,
} from '../../daemon/netlink-codec';
import { GenlSocket, NbdNetlink, NetlinkError } from '../../daemon/nbd-netlink';
import { netlinkOpen } from '../../daemon/restart-native';

t.test('NBD_CMD_CONNECT: header, attributes, nested sockets, backend identifier', async (t) => {
  const msg = encodeNbdConnect(0x1b, 7, {
    index: 2,
    sizeBytes: 64 * 2 ** 30 + 4096,
    blockSizeBytes: 4096,
    serverFlags: 0x16d,
    timeoutSec: 30,
    deadConnTimeoutSec: 120,
    fds: [11, 12],
    backendIdentifier: 'remapd-setup-0f0e',
  });
  t.equal(msg.readUInt32LE(0), msg.length, 'nlmsg_len is the whole message');
  t.equal(msg.readUInt16LE(4), 0x1b, 'type = family id');
  t.equal(msg.readUInt16LE(6), NLM_F_REQUEST | NLM_F_ACK, 'request + ack');
  t.equal(msg.readUInt32LE(8), 7, 'sequence');
  t.equal(msg[16], NbdCmd.CONNECT, 'genl command');
  t.equal(msg[17], 1, 'genl version');
  t.equal(msg.length % 4, 0, 'attributes padded to 4 bytes');
  const [m] = decodeMessages(msg);
  const g = decodeGenl(m);
  t.equal(g.attrs.get(NbdAttr.INDEX)!.readUInt32LE(0), 2);
  t.equal(g.attrs.get(NbdAttr.SIZE_BYTES)!.readBigUInt64LE(0), BigInt(64 * 2 ** 30 + 4096), '64-bit size');
  t.equal(g.attrs.get(NbdAttr.BLOCK_SIZE_BYTES)!.readBigUInt64LE(0), 4096n);
  t.equal(g.attrs.get(NbdAttr.SERVER_FLAGS)!.readBigUInt64LE(0), 0x16dn);
  t.equal(g.attrs.get(NbdAttr.TIMEOUT)!.readBigUInt64LE(0), 30n);
  t.equal(g.attrs.get(NbdAttr.DEAD_CONN_TIMEOUT)!.readBigUInt64LE(0), 120n);
  t.equal(attrString(g.attrs.get(NbdAttr.BACKEND_IDENTIFIER)!), 'remapd-setup-0f0e');
  t.equal(g.attrs.get(NbdAttr.BACKEND_IDENTIFIER)!.at(-1), 0, 'NLA_STRING is NUL-terminated');
  // SOCKETS: nested list of SOCK_ITEM(1) { SOCK_FD(1) u32 }, with NLA_F_NESTED set on the wire.
  const raw = msg.subarray(20);
  let at = 0;
  let socketsType = -1;
  while (at < raw.length) {
    const len = raw.readUInt16LE(at);
    if ((raw.readUInt16LE(at + 2) & 0x3fff) === NbdAttr.SOCKETS) socketsType = raw.readUInt16LE(at + 2);
    at += (len + 3) & ~3;
  }
  t.equal(socketsType, NbdAttr.SOCKETS | 0x8000, 'SOCKETS carries NLA_F_NESTED');
  const items = decodeAttrList(g.attrs.get(NbdAttr.SOCKETS)!);
  t.same(
    items.map(([type]) => type),
    [1, 1],
    'two SOCK_ITEMs',
  );
  t.same(
    items.map(([, v]) => decodeAttrs(v).get(1)!.readUInt32LE(0)),
    [11, 12],
    'their SOCK_FDs',
  );
});

t.test('RECONFIGURE without a backend identifier (older kernels) has no such attribute', async (t) => {
  const g = decodeGenl(decodeMessages(encodeNbdReconfigure(0x1b, 1, 0, [5]))[0]);
  t.equal(g.cmd, NbdCmd.RECONFIGURE);
  t.notOk(g.attrs.has(NbdAttr.BACKEND_IDENTIFIER));
  t.equal(g.attrs.get(NbdAttr.INDEX)!.readUInt32LE(0), 0);
});

t.test('decoding: controller reply (id, maxattr, multicast groups), LINK_DEAD, errors, bad lengths', async (t) => {
  const reply = encodeGenl(
    GENL_ID_CTRL,
    1,
    2,
    3,
    [
      { type: Ctrl.ATTR_FAMILY_NAME, str: 'nbd' },
      { type: Ctrl.ATTR_FAMILY_ID, u16: 0x22 },
      { type: Ctrl.ATTR_VERSION, u32: 1 },
      { type: Ctrl.ATTR_MAXATTR, u32: 10 },
      {
        type: Ctrl.ATTR_MCAST_GROUPS,
        nested: [
          {
            type: 1,
            nested: [
              { type: Ctrl.ATTR_MCAST_GRP_NAME, str: 'nbd_mc_group' },
              { type: Ctrl.ATTR_MCAST_GRP_ID, u32: 9 },
            ],
          },
        ],
      },
    ],
    0,
  );
  const f = decodeFamily(decodeGenl(decodeMessages(reply)[0]));
  t.same({ id: f.id, maxAttr: f.maxAttr, group: f.groups.get('nbd_mc_group') }, { id: 0x22, maxAttr: 10, group: 9 });
  const dead = encodeGenl(0x22, NbdCmd.LINK_DEAD, 1, 0, [{ type: NbdAttr.INDEX, u32: 3 }], 0);
  t.equal(nbdIndexOf(decodeGenl(decodeMessages(dead)[0])), 3, 'LINK_DEAD names the device');
  const err = Buffer.alloc(36);
  err.writeUInt32LE(36, 0);
  err.writeUInt16LE(2, 4);
  err.writeInt32LE(-16, 16);
  t.equal(errorOf(decodeMessages(err)[0]), 16, 'NLMSG_ERROR carries -errno (EBUSY)');
  const bad = Buffer.from(err);
  bad.writeUInt32LE(400, 0);
  t.throws(() => decodeMessages(bad), /malformed/, 'a length past the datagram is rejected');
  t.throws(() => decodeAttrs(Buffer.from([2, 0, 1, 0])), /malformed/, 'an attribute shorter than its header is rejected');
  t.same(encodeAttrs([{ type: 1, str: 'ab' }]), Buffer.from([7, 0, 1, 0, 0x61, 0x62, 0, 0]), 'string attribute: len 7, padded to 8');
});

t.test('the addon netlink socket against this kernel', { skip: netlinkOpen ? false : 'native addon not built' }, async (t) => {
  const s = new GenlSocket();
  t.teardown(() => s.close());
  const ctrl = s.resolveFamily('nlctrl');
  t.equal(ctrl.id, GENL_ID_CTRL, 'the controller resolves itself to 0x10');
  t.ok(ctrl.groups.has('notify'), 'with its notify multicast group');
  let code = '';
  try {
    s.resolveFamily('nosuchfamily');
  } catch (err) {
    code = err instanceof NetlinkError ? err.code : String(err);
  }
  t.equal(code, 'ENOENT', 'unknown family: ENOENT from the kernel');
  if (!existsSync('/sys/module/nbd')) {
    t.throws(() => new NbdNetlink(), /no nbd driver loaded \(run `modprobe nbd`/, 'without the nbd module: a clear message');
  } else {
    const nl = new NbdNetlink();
    t.ok(nl.family.groups.has('nbd_mc_group'), 'nbd family with its multicast group');
    nl.close();
  }
});
