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
      // `cond ? a() : b()` and `x && f()` as statements are used deliberately in a few callbacks.
      '@typescript-eslint/no-unused-expressions': ['error', { allowTernary: true, allowShortCircuit: true }],
      // Initialisers before a try/catch and "let go of this" reassignments (GC hints on large clones) read
      // better than the alternatives this rule pushes towards.
      'no-useless-assignment': 'off',
    },
  },
  {
    // Branded units (units/index.ts) are made only by its named conversions (byteOffset, blockOf,
    // spareBlock...): a cast would make the compiler's "never mix" check say nothing.
    files: ['**/*.ts'],
    ignores: ['units/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        ...['TSAsExpression', 'TSTypeAssertion'].map((node) => ({
          selector: `${node} > TSTypeReference.typeAnnotation[typeName.name=/^(ByteOffset|MainBlock|SpareBlock)$/]`,
          message:
            'Make units with the conversions of units/ (byteOffset, mainBlock, spareBlock, blockOf, blockStart, addBytes...), not a cast.',
        })),
      ],
    },
  },
  {
    // Plain CommonJS scripts run by node (packaging).
    files: ['**/*.js'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { require: 'readonly', module: 'writable', __dirname: 'readonly', process: 'readonly', console: 'readonly' },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
