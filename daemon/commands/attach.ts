import type { CommandModule } from 'yargs';
import { createLogger, LOG_LEVELS } from '../logger';
import { AttachSession } from '../attach-session';
import { Systemd } from '../systemd';

interface Args {
  socket: string;
  export: string;
  device?: string;
  connections: number;
  'dead-timeout': number;
  timeout: number;
  'block-size': number;
  'state-dir': string;
  'log-level': string;
}

/** /dev/nbdN -> N. */
export function nbdIndex(device: string): number {
  const m = /^(?:\/dev\/)?nbd(\d+)$/.exec(device);
  if (!m) throw new Error(`${device} is not an nbd device (/dev/nbdN)`);
  return Number(m[1]);
}

export const attachCommand: CommandModule<object, Args> = {
  command: 'attach',
  describe: 'Attach an export to a kernel nbd device and keep it attached across daemon restarts and crashes',
  builder: (y) =>
    y
      .option('socket', { type: 'string', demandOption: true, describe: 'Unix socket of the remapd export' })
      .option('export', { type: 'string', default: '', describe: 'Export name (empty: the default export)' })
      .option('device', { type: 'string', describe: 'nbd device (/dev/nbdN) [default: the first free one]' })
      .option('connections', { type: 'number', default: 1, describe: 'Connections (more than 1 needs CAN_MULTI_CONN)' })
      .option('dead-timeout', {
        type: 'number',
        default: 120,
        describe: 'Seconds the kernel queues I/O while the daemon is away, before failing it',
      })
      .option('timeout', {
        type: 'number',
        default: 30,
        describe: 'Seconds before a request without a reply is re-sent on a new connection',
      })
      .option('block-size', { type: 'number', default: 4096, describe: 'Logical block size of the device (512 … 4096)' })
      .option('state-dir', { type: 'string', default: '/run/remapd', describe: 'Where nbdN.attach.json is kept' })
      .option('log-level', {
        describe: 'Log level (logs go to stderr)',
        type: 'string',
        choices: LOG_LEVELS,
        default: process.env.REMAPD_LOG_LEVEL ?? 'info',
      })
      .check((a) => {
        if (!(Number.isInteger(a.connections) && a.connections >= 1 && a.connections <= 16))
          throw new Error('--connections must be 1 … 16');
        if (!(a['dead-timeout'] >= 0)) throw new Error('--dead-timeout must be >= 0 seconds');
        if (!(a.timeout >= 0)) throw new Error('--timeout must be >= 0 seconds');
        if (![512, 1024, 2048, 4096].includes(a['block-size'])) throw new Error('--block-size must be 512, 1024, 2048 or 4096');
        if (a.device !== undefined) nbdIndex(a.device);
        return true;
      })
      .example('$0 attach --socket /run/remapd/disk.sock --device /dev/nbd0', 'attach, reconnecting on daemon crashes'),
  handler: async (a) => {
    const log = createLogger(a['log-level']);
    const systemd = new Systemd(log);
    const session = new AttachSession(
      {
        socket: a.socket,
        exportName: a.export,
        index: a.device === undefined ? undefined : nbdIndex(a.device),
        connections: a.connections,
        deadTimeoutSec: a['dead-timeout'],
        timeoutSec: a.timeout,
        blockSize: a['block-size'],
        stateDir: a['state-dir'],
      },
      log,
    );
    let index: number;
    try {
      index = await session.start();
    } catch (err) {
      log.fatal({ err: (err as Error).message }, 'attach failed');
      process.stderr.write(`remapd attach: ${(err as Error).message}\n`);
      await systemd.status(`attach failed: ${(err as Error).message}`);
      await systemd.flush();
      process.exit(1);
    }
    const onSignal = (): void => {
      try {
        session.stop(true);
      } catch (err) {
        log.error({ err: (err as Error).message }, 'attach: disconnect failed');
      }
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    process.stdout.write(`/dev/nbd${index}\n`);
    void systemd.ready(`/dev/nbd${index} attached to ${a.socket}`);
    await session.run();
    await systemd.flush();
    process.exit(0);
  },
};
