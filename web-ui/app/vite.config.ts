import { defineConfig } from 'vitest/config';

// The build goes where the web-ui crate's build script asks (ATOLL_UI_OUT),
// to be embedded in the binary; `npm run build` alone writes dist/.
export default defineConfig({
  base: '/',
  build: {
    outDir: process.env.ATOLL_UI_OUT ?? 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1500,
  },
  server: { proxy: { '/v1': 'http://127.0.0.1:7070', '/metrics': 'http://127.0.0.1:7070' } },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
