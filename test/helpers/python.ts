/**
 * Run Python scripts with the system interpreter (/usr/bin/python3, which has Debian's
 * python3-libnbd), never a python3 that happens to be first on PATH.
 */
import { spawn } from 'node:child_process';
import { run, type RunResult } from './exec';

export const PYTHON = '/usr/bin/python3';

export function runPython(code: string, args: string[] = [], timeoutMs = 60_000): Promise<RunResult> {
  return run(PYTHON, ['-', ...args], { input: code, timeoutMs });
}

/**
 * Prelude for libnbd probe scripts. Provides:
 *   connect(uri, strict=False) -> handle (strict mode 0 so malformed requests reach the server)
 *   probe(name, fn, h)  runs fn(), records {name, ok, errno, errname, error, alive}, where alive says
 *                       whether a valid 512-byte read at offset 0 still works on the same handle after.
 *   emit()              prints the JSON list of records on stdout.
 */
export const LIBNBD_PRELUDE = String.raw`
import errno, json, sys, nbd
RESULTS = []
def connect(uri, strict=False):
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(uri)
    return h
def _alive(h):
    try:
        h.pread(512, 0)
        return True
    except Exception as e:
        return "alive-check failed: %s" % e
def probe(name, fn, h, check_alive=True):
    rec = {"name": name, "ok": False, "errno": None, "errname": None, "error": None, "value": None}
    try:
        v = fn()
        rec["ok"] = True
        if isinstance(v, (bytes, bytearray)):
            rec["value"] = len(v)
        elif isinstance(v, (int, str, bool)) or v is None:
            rec["value"] = v
    except nbd.Error as e:
        rec["errno"] = e.errnum
        rec["errname"] = e.errno
        rec["error"] = e.string
    except Exception as e:
        rec["error"] = "%s: %s" % (type(e).__name__, e)
    if check_alive:
        rec["alive"] = _alive(h)
    RESULTS.append(rec)
    return rec
def emit():
    print(json.dumps(RESULTS))
`;

export interface ProbeRecord {
  name: string;
  ok: boolean;
  errno: number | null;
  errname: string | null;
  error: string | null;
  value: unknown;
  alive?: boolean | string;
}

/** Run a probe script (prelude + body; body must call emit()) and parse its JSON result. */
export async function runProbes(body: string, timeoutMs = 60_000): Promise<{ result: RunResult; records: ProbeRecord[] }> {
  const result = await runPython(LIBNBD_PRELUDE + '\n' + body, [], timeoutMs);
  const line = result.stdout.trim().split('\n').pop() ?? '';
  let records: ProbeRecord[] = [];
  try {
    records = JSON.parse(line) as ProbeRecord[];
  } catch {
    records = [];
  }
  return { result, records };
}

/** A Python script running in the background: its stdout and stderr so far, and its exit status. */
export interface BackgroundPython {
  output(): string;
  readonly done: Promise<number | null>;
}

export function spawnPython(code: string, args: string[] = []): BackgroundPython {
  const py = spawn(PYTHON, ['-c', code, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  py.stdout.on('data', (b: Buffer) => (out += b.toString()));
  py.stderr.on('data', (b: Buffer) => (out += b.toString()));
  return { output: () => out, done: new Promise((r) => py.on('close', r)) };
}
