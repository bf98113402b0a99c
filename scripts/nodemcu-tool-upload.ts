/**
 * The baseline of the flash benchmark: NodeMCU-Tool's upload method, written here from its
 * description (docs/firmware/nodemcu.md, "How existing uploaders drive the REPL"), run
 * against the same simulated module as `tether flash`:
 * a write helper `__nmtwrite` that decodes hex pairs (the default firmware build has no
 * `encoder`, so NodeMCU-Tool uses hex), `print(file.open(name, "w+"))`, then the file as
 * 232-character hex pieces in `__nmtwrite("...")` lines, each sent only after the previous
 * command's prompt (`"\n>"`) came back (stop-and-wait), and `file.flush() file.close()`.
 * No verification (NodeMCU-Tool reads nothing back) and the port stays at its baud rate.
 */
import type { Transport } from '../src/transport/transport.js';

/** Hex characters per `__nmtwrite` line (NodeMCU-Tool's piece size). */
const PIECE = 232;

/**
 * Upload `content` as `name` the NodeMCU-Tool way over `t` (a module at its Lua prompt).
 * @returns milliseconds taken.
 * @throws Error when a prompt does not come back within `lineMs`.
 */
export async function nodemcuToolUpload(t: Transport, name: string, content: Buffer, lineMs = 5000): Promise<number> {
  let rx = '';
  let wake: (() => void) | undefined;
  t.onData((c) => {
    rx += Buffer.from(c).toString('latin1');
    wake?.();
  });
  // one command, then wait for the prompt delimiter "\n>" after its echo
  const command = async (line: string): Promise<string> => {
    rx = '';
    await t.write(Buffer.from(line + '\n', 'latin1'));
    const end = Date.now() + lineMs;
    while (!/\n> ?$/.test(rx)) {
      if (Date.now() > end) throw new Error(`no prompt within ${lineMs} ms after ${JSON.stringify(line.slice(0, 40))} (got ${JSON.stringify(rx.slice(-80))})`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    return rx;
  };
  const t0 = performance.now();
  await command('_G.__nmtwrite = function(s) for c in s:gmatch("..") do file.write(string.char(tonumber(c, 16))) end end');
  const opened = await command(`print(file.open("${name}", "w+"))`);
  if (/\nnil/.test(opened)) throw new Error(`file.open("${name}") failed`);
  const hex = content.toString('hex');
  for (let i = 0; i < hex.length; i += PIECE) await command(`__nmtwrite("${hex.slice(i, i + PIECE)}")`);
  await command('file.flush() file.close()');
  return performance.now() - t0;
}
