/**
 * Turning OS errors into BackendErrors: one shape for errors from Node's fs module and from the
 * native addon (which reports bare errno numbers), always naming the device and the byte offset.
 */
import { getSystemErrorMap } from 'util';
import { BackendError } from './backend';
import * as native from './native';

export type NodeErr = NodeJS.ErrnoException;

let systemErrors: Map<number, [string, string]> | undefined;
/** A Node-style fs error for an errno from the addon ("EIO: i/o error, read"). */
export function errnoError(errno: number, syscall: string): NodeErr {
  systemErrors ??= getSystemErrorMap();
  const [code, text] = systemErrors.get(-errno) ?? [native.errnoName(errno), 'unknown error'];
  const err = new Error(`${code}: ${text}, ${syscall}`) as NodeErr;
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  return err;
}

export function toBackendError(err: unknown, what: string, file: string, offset: number): BackendError {
  if (err instanceof BackendError) return err;
  const e = err as NodeErr;
  const code = typeof e?.code === 'string' ? e.code : 'EIO';
  const detail = e?.message ?? String(err);
  return new BackendError(code, `${what} ${file} at offset ${offset}: ${detail}`, offset);
}

/** True for "this kernel/filesystem/device cannot do that" (callers fall back). */
export function isUnsupported(err: unknown): boolean {
  const code = (err as NodeErr)?.code;
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS' || code === 'ENOTTY';
}
