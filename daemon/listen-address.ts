/** Parsing of --listen HOST[:PORT] (IPv6 in brackets). */
export const NBD_DEFAULT_PORT = 10809;

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export function parseListenAddress(text: string, defaultPort = NBD_DEFAULT_PORT): ListenAddress {
  const t = text.trim();
  let host: string;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (bracket) {
    host = bracket[1];
    portText = bracket[2];
  } else if ((t.match(/:/g) ?? []).length > 1) {
    host = t; // bare IPv6 without a port
  } else {
    const i = t.lastIndexOf(':');
    if (i >= 0) {
      host = t.slice(0, i);
      portText = t.slice(i + 1);
    } else {
      host = t;
    }
  }
  if (!host) throw new Error(`--listen '${text}': missing host`);
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d+$/.test(portText)) throw new Error(`--listen '${text}': port must be a number`);
    port = Number(portText);
    if (port < 0 || port > 65535) throw new Error(`--listen '${text}': port ${port} is out of range`);
  }
  return { host, port };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
