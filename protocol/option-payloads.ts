/**
 * Decoders for the payloads of option requests that carry structure (INFO/GO, meta contexts).
 * Each returns a typed value or a string explaining why the payload is malformed (→ NBD_REP_ERR_INVALID).
 */
import { MAX_STRING_LENGTH } from './constants';
import type { InfoRequest, MetaContextRequest } from './messages';

function readString(data: Buffer, at: number, what: string): { value: string; next: number } | string {
  if (at + 4 > data.length) return `${what}: length field truncated`;
  const len = data.readUInt32BE(at);
  if (len > MAX_STRING_LENGTH) return `${what}: ${len} bytes exceeds ${MAX_STRING_LENGTH}`;
  if (at + 4 + len > data.length) return `${what}: string truncated`;
  return { value: data.toString('utf8', at + 4, at + 4 + len), next: at + 4 + len };
}

/** NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count, count × u16 info type. */
export function decodeInfoRequest(data: Buffer): InfoRequest | string {
  const name = readString(data, 0, 'export name');
  if (typeof name === 'string') return name;
  let at = name.next;
  if (at + 2 > data.length) return 'information request count truncated';
  const count = data.readUInt16BE(at);
  at += 2;
  if (at + count * 2 !== data.length) return 'information request list length does not match its count';
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(at + i * 2));
  return { name: name.value, infos };
}

/** NBD_OPT_LIST/SET_META_CONTEXT: u32 name length, name, u32 query count, count × (u32 length, query). */
export function decodeMetaContextRequest(data: Buffer): MetaContextRequest | string {
  const name = readString(data, 0, 'export name');
  if (typeof name === 'string') return name;
  let at = name.next;
  if (at + 4 > data.length) return 'query count truncated';
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const q = readString(data, at, `query ${i}`);
    if (typeof q === 'string') return q;
    queries.push(q.value);
    at = q.next;
  }
  if (at !== data.length) return 'trailing bytes after the last query';
  return { exportName: name.value, queries };
}
