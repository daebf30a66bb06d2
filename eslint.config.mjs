// Lint rules for remapd: typescript-eslint's recommended set over every TypeScript source, with
// formatting left to prettier (.prettierrc). `npm run lint` runs both; `npm test` runs `npm run lint`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', '.tap/**', 'tmp/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      // Unused names are caught by tsc (noUnusedLocals/noUnusedParameters); `_x` marks a deliberate one.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Errors are often rethrown as they came; `catch {}` bodies say why they are empty.
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
);
