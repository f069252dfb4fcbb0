import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Tests start real processes (Dovecot, sendmail, many writers); two
    // cores are the budget, so files run one or two at a time.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
