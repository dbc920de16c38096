// Serves a built site (default: the web app, crates/web/dist) on http://127.0.0.1:PORT/ with the Range requests
// model streaming needs. Usage: node web/serve.mjs [DIR] [PORT]
import { resolve } from 'node:path';
import { startServer } from './e2e/server.mjs';

const dir = resolve(process.argv[2] ?? 'crates/web/dist');
const port = Number(process.argv[3] ?? 8080);
const server = await startServer({ dir, port });
console.log(`Ternlight: open ${server.origin}/ in a browser with WebGPU (Ctrl-C stops)`);
