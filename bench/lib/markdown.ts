/** Markdown helpers: tables, number formatting, and replacing one suite's section in docs/PERFORMANCE.md. */
import * as fs from 'fs';

export function table(header: readonly string[], rows: readonly (readonly string[])[], align?: readonly ('l' | 'r')[]): string {
  const sep = header.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header), line(sep), ...rows.map(line)].join('\n');
}

export function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function startMarker(suite: string): string {
  return `<!-- bench:${suite}:start -->`;
}
export function endMarker(suite: string): string {
  return `<!-- bench:${suite}:end -->`;
}

const DOC_HEADER = `# remapd performance

Numbers in the marked sections are written by \`npm run bench\` (bench/run.sh → dist/bench/run.js).
Each suite owns the text between its \`<!-- bench:NAME:start -->\` / \`<!-- bench:NAME:end -->\` markers and
rewrites it on every run; text outside the markers is kept. Run one suite with \`npm run bench -- NAME\`.
`;

/** Replace (or append) the marked section for `suite` in the doc at `docPath`. */
export function writeSection(docPath: string, suite: string, body: string): void {
  let doc = '';
  try {
    doc = fs.readFileSync(docPath, 'utf8');
  } catch {
    doc = DOC_HEADER;
  }
  const start = startMarker(suite);
  const end = endMarker(suite);
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) {
    doc = doc.slice(0, i) + block + doc.slice(j + end.length);
  } else {
    doc = `${doc.replace(/\s*$/, '')}\n\n${block}\n`;
  }
  fs.writeFileSync(docPath, doc);
}
