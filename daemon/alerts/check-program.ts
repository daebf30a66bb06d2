/** Start-up check of --alert-program: an absolute path to an executable file (a usage error otherwise). */
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';

export function checkAlertProgram(path: string): string | undefined {
  if (!isAbsolute(path)) return `--alert-program must be an absolute path (got ${path})`;
  try {
    if (!statSync(path).isFile()) return `--alert-program ${path} is not a file`;
    accessSync(path, constants.X_OK);
  } catch (err) {
    return `--alert-program ${path} is not executable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  return undefined;
}
