/**
 * `remapd demo`: a ready-to-try setup on sparse image files: a 1 GiB "failing" main disk with a few
 * simulated bad sectors (fault injection), a 256 MiB spare, and the daemon started in the background.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync, ftruncateSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { MetadataStore } from '../../metadata/store';
import { identityFromBackend } from '../../metadata/fingerprint';
import { openBackend } from '../../storage/file-backend';

interface Args {
  dir: string;
  stop: boolean;
  foreground: boolean;
  faults: boolean;
}

const MAIN_BYTES = 1024 * 1024 * 1024;
const SPARE_BYTES = 256 * 1024 * 1024;

/** A few ranges that fail like a dying disk: writes fail, reads fail, one block is flaky, one is slow. */
const DEMO_FAULTS = [
  { op: 'write', offset: 64 * 1024 * 1024, length: 64 * 1024, error: 'EIO' },
  { op: 'any', offset: 300 * 1024 * 1024, length: 4096, error: 'EIO' },
  { op: 'read', offset: 512 * 1024 * 1024, length: 4096, error: 'EIO', count: 2 },
  { op: 'read', offset: 700 * 1024 * 1024, length: 1024 * 1024, delayMs: 120 },
];

function sparseFile(path: string, size: number): void {
  if (existsSync(path)) return;
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function waitForSocket(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((done) => {
    const attempt = () => {
      const s = net.connect(path);
      s.once('connect', () => (s.destroy(), done(true)));
      s.once('error', () => (Date.now() > deadline ? done(false) : setTimeout(attempt, 100)));
    };
    attempt();
  });
}

export const demoCommand: CommandModule<object, Args> = {
  command: 'demo',
  describe: 'Create a demo setup on sparse image files and start serving it in the background',
  builder: (y) =>
    y
      .option('dir', { type: 'string', default: '/var/tmp/remapd-demo', describe: 'Where the images, sockets and log go' })
      .option('faults', {
        type: 'boolean',
        default: true,
        describe: 'Simulate a few bad sectors on the main image (--no-faults for a healthy disk)',
      })
      .option('foreground', {
        type: 'boolean',
        default: false,
        describe: 'Serve in the foreground instead of starting a background daemon',
      })
      .option('stop', { type: 'boolean', default: false, describe: 'Stop the demo daemon' })
      .example('$0 demo', 'start the demo and print how to attach it')
      .example('$0 demo --stop', 'stop it'),
  handler: async (a) => {
    const dir = resolve(a.dir);
    mkdirSync(dir, { recursive: true });
    const pidFile = join(dir, 'remapd.pid');
    const main = join(dir, 'main.img');
    const spare = join(dir, 'spare.img');
    const sock = join(dir, 'nbd.sock');
    const ctl = join(dir, 'nbd.ctl');
    const log = join(dir, 'remapd.log');
    const faults = join(dir, 'faults.json');
    const running = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : 0;
    if (a.stop) {
      if (running && alive(running)) {
        process.kill(running, 'SIGTERM');
        process.stdout.write(`stopped the demo daemon (pid ${running})\n`);
      } else process.stdout.write('the demo daemon is not running\n');
      return;
    }
    const bin = resolve(__dirname, '../../../bin/remapd');
    let pid = running && alive(running) ? running : 0;
    if (!pid) {
      sparseFile(main, MAIN_BYTES);
      sparseFile(spare, SPARE_BYTES);
      const mb = await openBackend(main);
      const sb = await openBackend(spare);
      try {
        await MetadataStore.open(sb, identityFromBackend(mb)).then((s) => s.close());
      } catch {
        const s = await MetadataStore.create(sb, identityFromBackend(mb), { blockSize: 4096 });
        await s.close();
      }
      await sb.close();
      await mb.close();
      writeFileSync(faults, JSON.stringify(a.faults ? DEMO_FAULTS : [], null, 2) + '\n');
      const args = [
        bin,
        'serve',
        '--main',
        main,
        '--spare',
        spare,
        '--socket',
        sock,
        '--control',
        ctl,
        '--faults',
        faults,
        '--export',
        'disk',
      ];
      if (a.foreground) {
        process.stdout.write(`serving ${main} (spare ${spare}) on ${sock}; Ctrl-C stops\n`);
        const child = spawn(process.execPath, args, { stdio: 'inherit' });
        await new Promise((r) => child.on('exit', r));
        return;
      }
      const out = openSync(log, 'a');
      const child = spawn(process.execPath, args, {
        detached: true,
        stdio: ['ignore', out, out],
        env: { ...process.env, REMAPD_LOG_JSON: '1' },
      });
      child.unref();
      closeSync(out);
      pid = child.pid ?? 0;
      writeFileSync(pidFile, `${pid}\n`);
      if (!(await waitForSocket(sock, 15000))) {
        process.stderr.write(`remapd: the demo daemon did not start; see ${log}\n`);
        process.exitCode = 1;
        return;
      }
    }
    const uri = `nbd+unix:///disk?socket=${sock}`;
    process.stdout.write(
      [
        `remapd demo is running (pid ${pid})`,
        `  directory  ${dir}`,
        `  main       main.img, 1 GiB sparse${a.faults ? ', with simulated bad sectors (faults.json)' : ''}`,
        `  spare      spare.img, 256 MiB sparse, 5 metadata copies`,
        `  NBD socket ${sock} (export "disk")`,
        `  log        ${log}`,
        '',
        'Attach it:',
        `  nbdinfo '${uri}'`,
        `  head -c 100M /dev/urandom | nbdcopy --flush - '${uri}'   # writes that hit bad sectors land on the spare`,
        `  nbd-client -unix ${sock} -N disk -b 4096 /dev/nbd0   # with the kernel nbd module (4 KiB blocks: see README)`,
        `  mkdir -p /mnt/remapd && nbdfuse /mnt/remapd --unix ${sock} &   # then: losetup -f --show /mnt/remapd/nbd`,
        '',
        'Watch it:',
        `  ${bin} status --control ${ctl}`,
        `  ${bin} list --control ${ctl}`,
        `Stop it:  ${bin} demo --stop${a.dir !== '/var/tmp/remapd-demo' ? ` --dir ${dir}` : ''}`,
        '',
      ].join('\n'),
    );
  },
};
