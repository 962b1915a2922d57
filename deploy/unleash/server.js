// Starts a local Unleash server for tests and the demo (scripts/svc/unleash.py runs it).
//
// unleash-server lives in a cache folder outside the repository, so it is imported by the
// absolute path the starter passes in UNLEASH_SERVER_DIR (ESM ignores NODE_PATH).
// Everything else is Unleash's own environment variables (DATABASE_URL, HTTP_HOST,
// HTTP_PORT, INIT_ADMIN_API_TOKENS, INIT_BACKEND_API_TOKENS, LOG_LEVEL); only what must
// never vary for a local, offline server is pinned here.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const serverDir = process.env.UNLEASH_SERVER_DIR;
if (!serverDir) {
  console.error('UNLEASH_SERVER_DIR is not set');
  process.exit(2);
}

// No phoning home from a test machine: createConfig only reads SEND_TELEMETRY when the
// option is falsy, so the environment variable is the reliable switch.
process.env.SEND_TELEMETRY = 'false';
process.env.CHECK_VERSION = 'false';

// unleash-server 8.2.0 records each flag's lifecycle stage from an async event listener.
// When a flag is deleted right after it was created or archived (the tests do that to start
// from a server that never saw the flag), the late insert into feature_lifecycles fails on
// its foreign key and the promise rejection goes unhandled. Unleash means to only log such
// rejections, but db-migrate (its migration tool) installs process-wide handlers during the
// migrations that exit(1) on any of them, so the server died and refused every later
// request. After the start, only these handlers remain: that one harmless error is logged
// and the server keeps running; anything else still ends the process, as Node's would.
function survivable(error) {
  return String(error && error.message).includes('feature_lifecycles');
}
const handlers = {};
for (const event of ['uncaughtException', 'unhandledRejection']) {
  handlers[event] = (error) => {
    console.error(`${event}:`, error);
    if (!survivable(error)) process.exit(1);
  };
}
function keepOnlyOurHandlers() {
  for (const [event, ours] of Object.entries(handlers)) {
    for (const listener of process.listeners(event)) {
      if (listener !== ours) process.off(event, listener);
    }
    if (!process.listeners(event).includes(ours)) process.on(event, ours);
  }
}

const entry = join(serverDir, 'node_modules', 'unleash-server', 'dist', 'lib', 'server-impl.js');
const { start } = await import(pathToFileURL(entry).href);

try {
  const unleash = await start({
    versionCheck: { enable: false },
    // The local PostgreSQL speaks plain TCP on loopback; pg would otherwise try TLS.
    db: { ssl: false },
    server: {
      host: process.env.HTTP_HOST || '127.0.0.1',
      port: Number(process.env.HTTP_PORT || 4242),
      gracefulShutdownTimeout: 1000,
    },
    logLevel: process.env.LOG_LEVEL || 'warn',
  });
  keepOnlyOurHandlers();
  console.log(`unleash ${unleash.version} listening on ${JSON.stringify(unleash.server.address())}`);
} catch (error) {
  console.error(error);
  process.exit(1);
}
