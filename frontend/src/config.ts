/**
 * Where the service is. Empty (the default): the page's own origin, i.e. the dev server's proxy
 * (`npm run dev`) or a web server that serves the build and proxies `/api`. Set
 * `VITE_CHAT_API_BASE=http://127.0.0.1:8000` at build or dev time to call the service directly
 * instead; the service must then allow this page's origin (`CORS_ALLOW_ORIGINS`).
 */
export const API_BASE: string = (import.meta.env.VITE_CHAT_API_BASE ?? "").replace(/\/+$/, "");
