import { defineConfig } from 'vitest/config';

// npm run bench: not part of npm test. One run (bench/run.bench.ts) of every section, in order.
export default defineConfig({
  test: {
    include: ['bench/**/*.bench.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
    maxWorkers: 1,
    minWorkers: 1,
  },
});
