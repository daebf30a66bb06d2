/**
 * Per-setup configuration file for `remapd serve --config FILE` (installed as /etc/remapd/NAME.json).
 *
 * The file is one JSON object whose keys are the long flags of `serve` in camelCase (`--read-only` →
 * `readOnly`), the same names yargs gives the parsed arguments. JSON because Node parses it without a
 * dependency and because it has exactly one way to write each value (no YAML-style surprises such as
 * `0600` becoming 384 or `no` becoming false).
 *
 * Precedence: a flag given explicitly on the command line beats the file; the file beats the flag's
 * default. Every key is validated at start; an unknown key or a bad value is a `ConfigFileError` whose
 * message names the file and the key.
 *
 * To make a new `serve` flag configurable, add one line to CONFIG_SCHEMA.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LOG_LEVELS } from './logger';

type Check = (value: unknown) => string | undefined;

interface KeySpec {
  /** What the value must be, for error messages: 'a string', 'a positive integer', … */
  readonly expect: string;
  readonly check: Check;
  /** A file path: relative values are resolved against the config file's directory. */
  readonly path?: boolean;
}

const str: KeySpec = { expect: 'a non-empty string', check: (v) => (typeof v === 'string' && v.length > 0 ? undefined : 'x') };
const path: KeySpec = { ...str, expect: 'a non-empty path string', path: true };
const bool: KeySpec = { expect: 'true or false', check: (v) => (typeof v === 'boolean' ? undefined : 'x') };
const positiveNumber: KeySpec = {
  expect: 'a positive number',
  check: (v) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? undefined : 'x'),
};
const positiveInt: KeySpec = {
  expect: 'a positive integer',
  check: (v) => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? undefined : 'x'),
};
const octalMode: KeySpec = {
  expect: 'an octal mode string like "0600"',
  check: (v) => (typeof v === 'string' && /^0?[0-7]{3}$/.test(v) ? undefined : 'x'),
};
const oneOf = (choices: readonly string[]): KeySpec => ({
  expect: `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`,
  check: (v) => (typeof v === 'string' && choices.includes(v) ? undefined : 'x'),
});

/**
 * The one schema: config key (camelCase of the `serve` long flag) → what its value must be.
 * New flag = one line here.
 */
export const CONFIG_SCHEMA = {
  main: path,
  spare: path,
  socket: path,
  listen: str,
  export: str,
  readOnly: bool,
  handshakeTimeout: positiveNumber,
  maxConnections: positiveInt,
  socketMode: octalMode,
  logLevel: oneOf(LOG_LEVELS),
  control: path,
  faults: path,
  metrics: str,
  maxOutstandingBytes: str,
  bufferBudget: str,
  outageHold: {
    expect: 'a number of seconds from 0 to 25',
    check: (v) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 25 ? undefined : 'x'),
  },
  readRetries: {
    expect: 'an integer from 0 to 100',
    check: (v) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 100 ? undefined : 'x'),
  },
  tls: oneOf(['off', 'on', 'require']),
  tlsCertificates: path,
  tlsVerifyPeer: bool,
  tlsPsk: path,
  scan: bool,
  socketGroup: str,
  scanRate: str,
  scanInterval: str,
  scanSlow: str,
  scanVerySlow: str,
  mainDirect: bool,
  mainIoDeadline: str,
  alertProgram: path,
  alertTimeout: positiveNumber,
  stateDir: path,
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof CONFIG_SCHEMA;
export type ConfigValues = Partial<Record<ConfigKey, string | number | boolean>>;

export class ConfigFileError extends Error {
  constructor(
    readonly file: string,
    readonly key: string | undefined,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'ConfigFileError';
  }
}

/** `readOnly` → `read-only` (the long flag of a config key). */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

/** `read-only` → `readOnly`. */
export function keyName(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

function isConfigKey(k: string): k is ConfigKey {
  return Object.prototype.hasOwnProperty.call(CONFIG_SCHEMA, k);
}

/** Validates an already-parsed config object; `file` is used in messages and to resolve paths. */
export function validateConfig(raw: unknown, file: string): ConfigValues {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigFileError(file, undefined, 'must contain one JSON object ({"main": "/dev/sdb", …})');
  }
  const out: ConfigValues = {};
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!isConfigKey(key)) {
      const hint = isConfigKey(keyName(key)) ? ` (did you mean "${keyName(key)}"?)` : '';
      throw new ConfigFileError(file, key, `unknown key "${key}"${hint}; known keys: ${Object.keys(CONFIG_SCHEMA).join(', ')}`);
    }
    const spec: KeySpec = CONFIG_SCHEMA[key];
    if (spec.check(value) !== undefined) {
      throw new ConfigFileError(file, key, `key "${key}" must be ${spec.expect}, not ${JSON.stringify(value)}`);
    }
    let v = value as string | number | boolean;
    if (spec.path && typeof v === 'string' && !isAbsolute(v)) v = resolve(dirname(resolve(file)), v);
    out[key] = v;
  }
  return out;
}

/** Reads and validates a config file. */
export function loadConfigFile(file: string): ConfigValues {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigFileError(file, undefined, `cannot read: ${e.code ?? e.message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigFileError(file, undefined, `not valid JSON: ${(err as Error).message}`);
  }
  return validateConfig(raw, file);
}

/**
 * The config keys whose flags appear on the command line (`--read-only`, `--no-read-only`,
 * `--readOnly`, `--socket-mode=0644`, …). Tokens after a bare `--` are not flags.
 */
export function explicitKeys(rawArgs: readonly string[]): Set<ConfigKey> {
  const out = new Set<ConfigKey>();
  for (const tok of rawArgs) {
    if (tok === '--') break;
    const m = /^--([^=]+)/.exec(tok);
    if (!m) continue;
    let name = m[1];
    const k0 = keyName(name);
    if (!isConfigKey(k0) && name.startsWith('no-')) name = name.slice(3);
    const k = keyName(name);
    if (isConfigKey(k)) out.add(k);
  }
  return out;
}

/**
 * Merges a config file into yargs' parsed arguments: every key in the file whose flag was not given
 * explicitly on the command line replaces the parsed value (which is then only a default). Both the
 * kebab-case and camelCase properties are set, as yargs provides both.
 */
export function mergeConfig<A extends Record<string, unknown>>(argv: A, config: ConfigValues, rawArgs: readonly string[]): A {
  const explicit = explicitKeys(rawArgs);
  const merged: Record<string, unknown> = { ...argv };
  for (const [key, value] of Object.entries(config) as [ConfigKey, unknown][]) {
    if (explicit.has(key)) continue;
    merged[flagName(key)] = value;
    merged[key] = value;
  }
  return merged as A;
}

/**
 * For `serve`: when argv has `config`, load it and merge; otherwise return argv unchanged.
 * `rawArgs` defaults to this process's own arguments.
 */
export function applyConfigFile<A extends Record<string, unknown>>(argv: A, rawArgs: readonly string[] = process.argv.slice(2)): A {
  const file = argv.config;
  if (typeof file !== 'string' || file === '') return argv;
  return mergeConfig(argv, loadConfigFile(file), rawArgs);
}
