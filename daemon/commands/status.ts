import type { CommandModule } from 'yargs';
import { callControl } from '../control-client';
import { formatStatus } from '../status-view';
import { printError, withControl } from './control-target';

interface Args {
  control: string;
  json: boolean;
  watch: boolean;
  interval: number;
}

export const statusCommand: CommandModule<object, Args> = {
  command: 'status',
  describe: 'Show the state of a running daemon: health, remaps, spare use, clients',
  builder: (y) =>
    withControl(y)
      .option('watch', { type: 'boolean', default: false, describe: 'Refresh until interrupted' })
      .option('interval', { type: 'number', default: 2, describe: 'Seconds between refreshes with --watch' })
      .example('$0 status --control /run/remapd/disk.ctl', 'human-readable status')
      .example('$0 status --json | jq .remaps', 'remap counts for scripts'),
  handler: async (a) => {
    const once = async () => {
      const s = (await callControl(a.control, 'status')) as Record<string, unknown>;
      if (a.json) process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      else process.stdout.write(formatStatus(s));
    };
    try {
      if (!a.watch) return await once();
      for (;;) {
        if (process.stdout.isTTY && !a.json) process.stdout.write('\x1b[2J\x1b[H');
        await once();
        await new Promise((r) => setTimeout(r, a.interval * 1000));
      }
    } catch (err) {
      printError(err);
    }
  },
};
