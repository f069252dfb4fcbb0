import { defineConfig } from 'vitest/config';

// The crowd tests (hundreds of hook processes at once) use both cores by
// themselves: npm test runs them alone, after the rest.
export default defineConfig({
  test: {
    include: ['test/burst.test.ts'],
    testTimeout: 600_000,
    maxWorkers: 1,
    minWorkers: 1,
  },
});
