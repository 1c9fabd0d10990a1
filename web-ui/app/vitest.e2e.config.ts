import { defineConfig } from 'vitest/config';

// Browser tests: real atoll processes, real Chromium. One file at a time,
// since each starts its own nodes.
export default defineConfig({
  test: {
    include: ['e2e/**/*.e2e.ts'],
    environment: 'node',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
