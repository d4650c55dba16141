// The dev server (and `vite preview`) send /api to rill, so the page and the API share an origin:
// no CORS, and a cookie would work as it does in production behind one proxy.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const rill = process.env.RILL_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/api": rill } },
  preview: { proxy: { "/api": rill } },
});
