import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { defaultCandidates, describeCandidate, planAssembly, setupPaths } from '../assemble';
import { claimSetup, SetupInUseError } from '../owner-lock';

/** undefined when nobody holds the setup's devices; else why it is in use (names the owner). */
async function inUseBy(main: string, spare: string): Promise<string | undefined> {
  try {
    (await claimSetup({ main, spare })).release();
    return undefined;
  } catch (err) {
    if (err instanceof SetupInUseError) return err.message;
    throw err;
  }
}

interface Args {
  scan: boolean;
  paths?: string[];
  'dry-run': boolean;
  json: boolean;
  'socket-dir': string;
  verbose: boolean;
}

function listening(path: string): Promise<boolean> {
  return new Promise((done) => {
    if (!existsSync(path)) return done(false);
    const s = net.connect(path);
    s.once('connect', () => (s.destroy(), done(true)));
    s.once('error', () => done(false));
  });
}

function waitListening(path: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  return new Promise((done) => {
    const again = async () => {
      if (await listening(path)) return done(true);
      if (Date.now() > until) return done(false);
      setTimeout(again, 100);
    };
    void again();
  });
}

export const assembleCommand: CommandModule<object, Args> = {
  command: 'assemble [paths..]',
  describe: 'Find spares by their metadata, pair them with their main devices by fingerprint, start the exports',
  builder: (y) =>
    y
      .positional('paths', {
        type: 'string',
        array: true,
        describe: 'Devices or files to examine [default with --scan: /dev/disk/by-id/*]',
      })
      .option('scan', { type: 'boolean', default: false, describe: 'Examine candidate devices (the given paths, else /dev/disk/by-id)' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'Print what would be started, start nothing' })
      .option('json', { type: 'boolean', default: false, describe: 'One object per setup, with conflicts, as JSON' })
      .option('socket-dir', { type: 'string', default: '/run/remapd', describe: 'Where the NBD and control sockets of started setups go' })
      .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'Also list every candidate examined' })
      .check((a) => {
        if (!a.scan && !(a.paths && a.paths.length)) throw new Error('give --scan, or the devices to examine');
        return true;
      })
      .example('$0 assemble --scan', 'start every setup found among /dev/disk/by-id')
      .example('$0 assemble --scan --dry-run --json /dev/loop0 /dev/loop1', 'show how two loop devices pair'),
  handler: async (a) => {
    const paths = a.paths && a.paths.length ? a.paths.map(String) : defaultCandidates();
    const plan = await planAssembly(paths);
    const bin = resolve(__dirname, '../../../bin/remapd');
    const results = [] as Record<string, unknown>[];
    for (const s of plan.setups) {
      const p = setupPaths(s.name, a['socket-dir']);
      const command = [
        bin,
        'serve',
        '--main',
        s.main,
        '--spare',
        s.spare,
        '--export',
        s.name,
        '--socket',
        p.socket,
        '--control',
        p.control,
      ];
      let state: string;
      let busy: string | undefined;
      if (await listening(p.socket)) state = 'running';
      else if ((busy = await inUseBy(s.main, s.spare))) state = `in use: ${busy}`;
      else if (a['dry-run']) state = 'would-start';
      else {
        mkdirSync(a['socket-dir'], { recursive: true });
        const out = openSync(p.log, 'a');
        const child = spawn(process.execPath, command, {
          detached: true,
          stdio: ['ignore', out, out],
          env: { ...process.env, REMAPD_LOG_JSON: '1' },
        });
        child.unref();
        closeSync(out);
        state = (await waitListening(p.socket, 15000)) ? 'started' : `failed to start (see ${p.log})`;
      }
      results.push({ ...s, socket: p.socket, control: p.control, state, command });
    }
    if (a.json) {
      process.stdout.write(JSON.stringify({ setups: results, conflicts: plan.conflicts, warnings: plan.warnings }, null, 2) + '\n');
    } else {
      if (a.verbose) for (const c of plan.candidates) process.stdout.write(`candidate ${describeCandidate(c)}\n`);
      for (const r of results) {
        process.stdout.write(`${r.name}: main ${r.main}, spare ${r.spare} (setup ${r.setupUuid}): ${r.state}\n`);
        if (r.state === 'would-start') process.stdout.write(`  ${(r.command as string[]).join(' ')}\n`);
      }
      for (const w of plan.warnings) process.stdout.write(`warning: ${w}\n`);
      for (const c of plan.conflicts) process.stderr.write(`conflict: ${c.problem}\n`);
      if (!results.length && !plan.conflicts.length) process.stdout.write('no remapd spare found\n');
    }
    if (plan.conflicts.length || results.some((r) => String(r.state).startsWith('failed'))) process.exitCode = 1;
  },
};
