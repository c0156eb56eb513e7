import { defineConfig } from 'vitest/config';

// Three tiers, chosen by file name. Unit tests need no service; int and e2e tests share ONE
// Temporal dev server and ONE PostgreSQL started by the global setup (or the ones named by
// TEMPORAL_ADDRESS and DATABASE_URL). pool 'forks': worker threads break Temporal's native bridge.
export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 180_000,
    teardownTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/**/*.unit.test.ts'] } },
      {
        extends: true,
        test: { name: 'int', include: ['test/**/*.int.test.ts'], globalSetup: ['test/setup/global.ts'] },
      },
      {
        extends: true,
        test: { name: 'e2e', include: ['test/**/*.e2e.test.ts'], globalSetup: ['test/setup/global.ts'] },
      },
    ],
  },
});
