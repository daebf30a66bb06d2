/** Machine description for the report header. */
import * as os from 'os';
import { run, versionOf } from './proc';

export interface MachineInfo {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly kernel: string;
  readonly memGiB: number;
  readonly node: string;
  readonly fio: string;
  readonly loadAvgAtStart: readonly number[];
  readonly os: string;
}

export async function machineInfo(): Promise<MachineInfo> {
  const osRelease = await run('sh', ['-c', '. /etc/os-release && echo "$PRETTY_NAME"']).catch(() => undefined);
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    fio: await versionOf('fio', ['--version']),
    loadAvgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    os: osRelease?.stdout.trim() || 'unknown',
  };
}

export function loadAvg1(): number {
  return Math.round(os.loadavg()[0] * 100) / 100;
}
