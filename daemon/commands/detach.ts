import type { CommandModule } from 'yargs';
import { NbdNetlink } from '../nbd-netlink';
import { readAttachState, removeAttachState } from '../attach-session';
import { nbdIndex } from './attach';

interface Args {
  device: string;
  'state-dir': string;
}

export const detachCommand: CommandModule<object, Args> = {
  command: 'detach',
  describe: 'Disconnect a kernel nbd device attached with remapd attach (and stop its attach process)',
  builder: (y) =>
    y
      .option('device', { type: 'string', demandOption: true, describe: 'nbd device (/dev/nbdN)' })
      .option('state-dir', { type: 'string', default: '/run/remapd', describe: 'Where nbdN.attach.json is kept' })
      .check((a) => (nbdIndex(a.device), true)),
  handler: (a) => {
    const index = nbdIndex(a.device);
    const state = readAttachState(a['state-dir'], index);
    try {
      if (state?.pid && state.pid !== process.pid) {
        try {
          process.kill(state.pid, 'SIGTERM'); // the attach process disconnects and exits
        } catch {
          /* not running */
        }
      }
      const nl = new NbdNetlink();
      nl.disconnect(index);
      nl.close();
      removeAttachState(a['state-dir'], index);
      process.stdout.write(`/dev/nbd${index} disconnected\n`);
    } catch (err) {
      process.stderr.write(`remapd detach: ${(err as Error).message}\n`);
      process.exit(1);
    }
  },
};
