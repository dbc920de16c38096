// The Web Worker the engine runs in by default, so that loading and generating never block the page.
import { handle } from './host.js';

self.onmessage = (event) => handle(event.data, (reply) => self.postMessage(reply));
