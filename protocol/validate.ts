/**
 * Checks a transmission request against the spec and the negotiated session before anything runs.
 * Returns the errno name to reply with, or undefined when the request may be dispatched.
 */
import { Cmd, CmdFlag, MAX_EFFECT_LENGTH, MAX_PAYLOAD, TxFlag, type NbdErrnoName } from './constants';
import type { RequestMessage } from './messages';

export interface ValidationContext {
  readonly size: number;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  readonly hasMetaContext: boolean;
}

/** Flags each command accepts, given what was advertised. */
function allowedFlags(type: number, ctx: ValidationContext): number {
  const tx = ctx.transmissionFlags;
  let allowed = tx & TxFlag.SEND_FUA ? CmdFlag.FUA : 0;
  switch (type) {
    case Cmd.READ:
      if (ctx.structuredReplies) allowed |= CmdFlag.DF;
      break;
    case Cmd.WRITE_ZEROES:
      allowed |= CmdFlag.NO_HOLE;
      if (tx & TxFlag.SEND_FAST_ZERO) allowed |= CmdFlag.FAST_ZERO;
      break;
    case Cmd.BLOCK_STATUS:
      allowed |= CmdFlag.REQ_ONE;
      break;
  }
  return allowed;
}

export function validateRequest(req: RequestMessage, ctx: ValidationContext): NbdErrnoName | undefined {
  const { type, flags, offset, length } = req;
  const tx = ctx.transmissionFlags;
  if (type > Cmd.BLOCK_STATUS) return 'EINVAL';
  if ((flags & ~allowedFlags(type, ctx)) !== 0) return 'EINVAL';

  const readOnly = (tx & TxFlag.READ_ONLY) !== 0;
  switch (type) {
    case Cmd.FLUSH:
      if (!(tx & TxFlag.SEND_FLUSH)) return 'EINVAL';
      if (offset !== 0 || length !== 0) return 'EINVAL';
      return undefined;
    case Cmd.READ:
      if (length === 0 || length > MAX_PAYLOAD) return 'EINVAL';
      if (offset + length > ctx.size) return 'EINVAL';
      return undefined;
    case Cmd.WRITE:
      if (readOnly) return 'EPERM';
      if (length === 0) return 'EINVAL';
      if (offset + length > ctx.size) return 'ENOSPC';
      return undefined;
    case Cmd.TRIM:
      if (!(tx & TxFlag.SEND_TRIM)) return readOnly ? 'EPERM' : 'EINVAL';
      if (length === 0 || length > MAX_EFFECT_LENGTH) return 'EINVAL';
      if (offset + length > ctx.size) return 'EINVAL';
      return undefined;
    case Cmd.WRITE_ZEROES:
      if (!(tx & TxFlag.SEND_WRITE_ZEROES)) return readOnly ? 'EPERM' : 'EINVAL';
      if (length === 0) return 'EINVAL';
      if (offset + length > ctx.size) return 'ENOSPC';
      return undefined;
    case Cmd.CACHE:
      if (!(tx & TxFlag.SEND_CACHE)) return 'EINVAL';
      if (length === 0 || offset + length > ctx.size) return 'EINVAL';
      return undefined;
    case Cmd.BLOCK_STATUS:
      if (!ctx.structuredReplies || !ctx.hasMetaContext) return 'EINVAL';
      if (length === 0 || offset + length > ctx.size) return 'EINVAL';
      return undefined;
    case Cmd.DISC:
      return undefined;
  }
  return 'EINVAL';
}
