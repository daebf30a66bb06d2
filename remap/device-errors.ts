/** Translation of backend (OS) failures into the errno a client sees. */
import { DeviceError } from '../protocol/block-device';
import type { NbdErrnoName } from '../protocol/constants';
import { BackendError } from '../storage/backend';

const CODE_TO_ERRNO: Record<string, NbdErrnoName> = {
  EIO: 'EIO',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EFBIG: 'ENOSPC',
  EROFS: 'EPERM',
  EPERM: 'EPERM',
  EACCES: 'EPERM',
  ENOMEM: 'ENOMEM',
  EINVAL: 'EINVAL',
  ENOTSUP: 'ENOTSUP',
  EOPNOTSUPP: 'ENOTSUP',
};

export function toDeviceError(err: unknown): DeviceError {
  if (err instanceof DeviceError) return err;
  if (err instanceof BackendError) {
    return new DeviceError(CODE_TO_ERRNO[err.code] ?? 'EIO', err.message, err.offset);
  }
  const e = err as NodeJS.ErrnoException;
  return new DeviceError((e?.code && CODE_TO_ERRNO[e.code]) || 'EIO', e?.message ?? String(err));
}

/** For promise chains: `.catch(rethrowDeviceError)`. */
export function rethrowDeviceError(err: unknown): never {
  throw toDeviceError(err);
}
