// The linter npm test runs (npm run lint): ESLint's and typescript-eslint's
// recommended rules, over our TypeScript and the .mjs test fixtures.

import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'build/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: { globals: globals.node },
  },
  {
    rules: {
      // Control characters are what poprelay escapes in log lines and refuses in input: its patterns name them.
      'no-control-regex': 'off',
      // An unused binding is an error, except one named _ on purpose.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
    },
  },
);
