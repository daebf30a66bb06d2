/**
 * The control socket's wire format: one JSON object per line in each direction.
 *   request:  {"id": 1, "cmd": "status", "args": {...}}
 *   response: {"id": 1, "ok": true, "result": ...} | {"id": 1, "ok": false, "error": "message"}
 */
export interface ControlRequest {
  readonly id: number;
  readonly cmd: string;
  readonly args?: Record<string, unknown>;
}

export type ControlResponse =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: string };

/** Longest request line accepted (a faults file can be large). */
export const MAX_CONTROL_LINE = 64 * 1024 * 1024;

/** Default control socket: beside the NBD socket, `<name>.ctl`. */
export function defaultControlPath(nbdSocket: string | undefined, exportName: string): string {
  if (nbdSocket) return nbdSocket.replace(/\.sock$/, '') + '.ctl';
  return `/run/remapd/${exportName}.ctl`;
}
