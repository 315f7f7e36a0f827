import { defineConfig } from "vitest/config";

// Tests that talk to a running service at CHAT_SERVICE_URL (tests/test_frontend_browser.py
// starts one against the fake upstream and runs `vitest run --config vitest.live.config.ts`).
export default defineConfig({
  test: {
    environment: "node",
    include: ["src/**/*.live.test.ts"],
    testTimeout: 30_000,
  },
});
