/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig, loadEnv } from "vite";

// `npm run dev` serves the app on http://localhost:5173 and forwards the API to the service, so
// the browser sees one origin and no CORS is needed. The target comes from CHAT_SERVICE_URL
// (environment or .env), default the address `make run` listens on.
export default defineConfig(({ mode }) => {
  const env = { ...loadEnv(mode, process.cwd(), ""), ...process.env };
  const target = env.CHAT_SERVICE_URL || "http://127.0.0.1:8000";
  // Streams must pass event by event: Vite's proxy (http-proxy) does not buffer or compress, and
  // a browser closing the stream closes the proxied request, which stops the generation.
  const proxy = {
    "/api": { target, changeOrigin: true },
    "/v1": { target, changeOrigin: true },
    "/healthz": { target, changeOrigin: true },
  };
  return {
    plugins: [react()],
    server: { proxy },
    preview: { proxy },
    build: { outDir: "dist", sourcemap: true },
    test: {
      // Pure modules run in node; component tests opt into a DOM with a file comment.
      environment: "node",
      include: ["src/**/*.test.{ts,tsx}"],
      // Tests against a running service: vitest.live.config.ts, run by tests/test_frontend_browser.py.
      exclude: ["src/**/*.live.test.ts", "node_modules/**"],
      restoreMocks: true,
    },
  };
});
