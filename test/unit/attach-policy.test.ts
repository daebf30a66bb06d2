/** When `remapd attach` refuses to reconnect a device (daemon/attach-policy.ts). */
import t from 'tap';
import { backendIdentifier, refuseMultiConnection, refuseReattach } from '../../daemon/attach-policy';

const U = '3f2b8e9c-1d4a-4c5e-9f00-0123456789ab';
const base = { backend: `remapd-setup-${U}`, size: 1 << 30, transmissionFlags: 0x6d };

t.test('backend identifier from the export description', async (t) => {
  t.equal(backendIdentifier(`remapd setup=${U} main=/dev/sdb spare=/dev/sdc`, 'disk'), `remapd-setup-${U}`);
  t.equal(backendIdentifier(`remapd setup=${U.toUpperCase()}`, 'disk'), `remapd-setup-${U}`, 'case-insensitive');
  t.equal(backendIdentifier('/dev/sdb (passthrough)', 'disk'), 'remapd-passthrough-disk', 'no spare: the export name');
  t.equal(backendIdentifier(undefined, ''), 'remapd-passthrough-default');
  t.equal(backendIdentifier(`xsetup=${U}`, 'd'), 'remapd-passthrough-d', 'only a whole setup= word counts');
});

t.test('refusals', async (t) => {
  t.equal(refuseReattach(base, { ...base }), undefined, 'the same export is accepted');
  t.match(refuseReattach(base, { ...base, backend: 'remapd-setup-other' }), /another setup/);
  t.match(refuseReattach(base, { ...base, size: base.size + 4096 }), /size changed/);
  t.match(refuseReattach(base, { ...base, transmissionFlags: base.transmissionFlags | 0x2 }), /read-only .* writable/);
  t.match(refuseReattach(base, { ...base, transmissionFlags: base.transmissionFlags & ~0x4 }), /flags changed .*SEND_FLUSH/);
  t.match(refuseMultiConnection(base, { ...base }), /CAN_MULTI_CONN/, 'several connections need multi-conn');
  t.equal(refuseMultiConnection({ ...base, transmissionFlags: 0x6d | 0x100 }, { ...base, transmissionFlags: 0x6d | 0x100 }), undefined);
});
