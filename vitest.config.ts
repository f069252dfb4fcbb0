import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Crowds of hundreds of processes run alone, after the rest (npm test).
    exclude: ['test/burst.test.ts', 'node_modules/**'],
    // Generous: tests wait for outcomes (eventually(), up to 60 s by default)
    // and must pass on a loaded 2-core machine.
    testTimeout: 240_000,
    hookTimeout: 120_000,
    // Tests start real processes (Dovecot, sendmail, many writers); two
    // cores are the budget, so files run one or two at a time.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
