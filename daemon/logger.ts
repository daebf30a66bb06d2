/**
 * pino JSON logs to stdout (journald takes them as they are). Level from --log-level or REMAPD_LOG_LEVEL.
 * When stdout is a terminal, lines are printed readable instead of JSON.
 */
import pino, { type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** A small synchronous pretty printer for terminals (no extra dependency). */
function prettyStream(): { write(line: string): void } {
  return {
    write(line: string) {
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        const { level, time, msg, pid: _pid, hostname: _host, name: _name, ...rest } = o;
        const t = new Date(time as number).toISOString().slice(11, 23);
        const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
        process.stdout.write(`${t} ${LEVEL_NAMES[level as number] ?? level} ${msg ?? ''}${extra}\n`);
      } catch {
        process.stdout.write(line);
      }
    },
  };
}

export function createLogger(level?: string, opts: { pretty?: boolean } = {}): Logger {
  const lvl = (level ?? process.env.REMAPD_LOG_LEVEL ?? 'info') as LogLevel;
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && process.env.REMAPD_LOG_JSON !== '1');
  const base = { name: 'remapd' };
  if (pretty) return pino({ level: lvl, base }, prettyStream());
  return pino({ level: lvl, base }, pino.destination({ dest: 1, sync: true }));
}
