/**
 * Preloaded by `npm test` (`node --test --import ./dist/test/helpers/flush-on-exit.js`), which
 * node's runner passes on to every test file's process. In a test file's own process (its main
 * module a `.test.js`) it makes stdout blocking when it is a pipe, which is how that process sends
 * its results to the runner: with `--test-force-exit` the process is ended as soon as its tests
 * have, and results still queued in the pipe were lost. The runner then reported fewer tests than
 * ran, and still exited 0 (nodejs/node#64833, open; measured here: 8 of 20 runs of a file of 200
 * tests lost verdicts without it, 0 of 20 with it). test/force-exit-flush.test.ts shows it.
 *
 * Other processes (the runner itself, the CLIs and simulators tests start) are left as they are.
 * No exports: importing it is the effect.
 */
const main = process.argv[1] ?? '';
if (main.endsWith('.test.js') || main.endsWith('.test.mjs')) {
  // libuv's uv_stream_set_blocking on the pipe, as node does for stdout on exit paths itself
  const handle = (process.stdout as unknown as { _handle?: { setBlocking?: (blocking: boolean) => unknown } })._handle;
  handle?.setBlocking?.(true);
}
export {};
