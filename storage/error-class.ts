/**
 * What a failed I/O says about the disk. Only a *media* error counts against a block (retry, bisect,
 * pending, remap). A *device-gone* error means the whole device disappeared: no block is to blame, and
 * marking thousands of blocks pending would be a lie. Everything else is a *config* fault (read-only,
 * no space, bad descriptor, permissions, bad arguments): reported clearly, never answered with a remap.
 *
 *   media        EIO ENODATA EBADMSG EILSEQ, and ETIMEDOUT (an I/O that missed its deadline)
 *   device-gone  ENXIO ENODEV ENOMEDIUM ESHUTDOWN
 *   config       anything else (ENOSPC EROFS EACCES EPERM EBADF EINVAL ...)
 */

export type FailureClass = 'media' | 'device-gone' | 'config';

const MEDIA = new Set(['EIO', 'ENODATA', 'EBADMSG', 'EILSEQ', 'ETIMEDOUT']);
const GONE = new Set(['ENXIO', 'ENODEV', 'ENOMEDIUM', 'ESHUTDOWN']);

/** Class of an OS error code such as 'EIO'. */
export function classifyCode(code: string): FailureClass {
  if (MEDIA.has(code)) return 'media';
  if (GONE.has(code)) return 'device-gone';
  return 'config';
}

/** True for errors that say something about the block at the failing offset. */
export function isMediaError(code: string): boolean {
  return MEDIA.has(code);
}
