/**
 * Hostile input against the shared agent core under stock Lua 5.1 (WebAssembly,
 * test/helpers/lua.ts; the NodeMCU default build's language): 10,000 malformed frames (random bytes, frames with a valid
 * CRC and garbage heads or bodies, floods of `&` fragments without `$`, bundles that are not, bad escapes,
 * overlong lines, sequence numbers and acks all over, stray S/A/Y/B, short heads with bad digits,
 * escapes or CRCs), mixed with real
 * calls. The agent must keep answering every real call exactly once, a hello and an echo
 * afterwards must work, and its heap after a full GC must stay flat (< 16 KB growth).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { callMessage, crc32, crc6, encodeFrame, encodeShortFrame, shortHead } from '../src/codec/frame.js';
import { SEQ_MOD } from '../src/codec/constants.js';
import { AgentHost, runCoreDriver, txt } from './helpers/agent-host.js';

/** Deterministic PRNG (mulberry32). */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))) };
}

/** A line `~<raw>` with a valid CRC over the bytes as given (no escaping applied). */
function rawFrame(raw: Buffer): Buffer {
  const s = Buffer.concat([Buffer.from('~'), raw]);
  return Buffer.concat([s, Buffer.from(` ${crc32(s).toString(16).toUpperCase().padStart(8, '0')}\n`, 'latin1')]);
}

/** A line `~<raw>` with a valid short-head CRC (six base-64 digits, docs/protocol.md section 1) over the bytes as given. */
function rawShort(raw: Buffer): Buffer {
  const s = Buffer.concat([Buffer.from('~'), raw]);
  return Buffer.concat([s, Buffer.from(`${crc6(crc32(s))}\n`, 'latin1')]);
}

test('10,000 hostile frames: the agent keeps answering, runs every real call once, and its heap stays flat', (t) => {
  const r = rng(20240611);
  const h = new AgentHost(55555);
  let replies = 0; // sequenced frames the agent will have sent: one per real call (small replies)
  const chunks: Buffer[] = [h.start(), h.call(1, 'hello', [2, 4096])];
  replies++;
  h.rx = replies;
  chunks.push(h.call(2, 'gc'), Buffer.from('%%F\n'));
  replies++;
  /**
   * A sequence number behind the one the agent expects (an old duplicate: it must be dropped).
   * Not ahead of it: a CRC-valid frame with a future sequence number is indistinguishable from the
   * genuine one (the link has no authentication, docs/protocol.md section 5), so selective repeat
   * keeps it in place of the real frame; the agent's keep-buffer is bounded by its window.
   */
  const wrongSeq = () => (h.seq - 1 - r.int(SEQ_MOD / 2 - 1) + SEQ_MOD) % SEQ_MOD;
  const realIds: number[] = [];
  const kinds = new Map<string, number>();
  for (let i = 0; i < 10000; i++) {
    const k = r.int(14);
    kinds.set(String(k), (kinds.get(String(k)) ?? 0) + 1);
    switch (k) {
      case 0: // random bytes, sometimes starting with ~
        chunks.push(Buffer.concat([r.int(2) ? Buffer.from('~') : Buffer.alloc(0), r.bytes(r.int(300)), Buffer.from('\n')]));
        break;
      case 1: // valid CRC, random head and body (may contain raw escapes)
        chunks.push(rawFrame(Buffer.concat([Buffer.from('CRXEPL&$SAYBQ~'[r.int(14)]), r.bytes(r.int(120)).map((b) => (b === 10 ? 11 : b))])));
        break;
      case 2: // valid CRC, sequenced head out of order, garbage body
        chunks.push(encodeFrame(`${'CRXEPL&$'[r.int(8)]}${wrongSeq()}.${r.int(SEQ_MOD)}`, r.bytes(r.int(200))));
        break;
      case 3: // in order: a message that is not a call (no reply), or a call head without a number
        chunks.push(encodeFrame(`${'RXEPLC'[r.int(6)]}${h.seq}.${h.rx}`, Buffer.concat([Buffer.from('x'), r.bytes(r.int(100))])));
        h.seq = (h.seq + 1) % SEQ_MOD;
        break;
      case 4: {
        // a flood of in-order & fragments without $ (past maxmsg), then a frame that abandons it
        const n = 5 + r.int(40);
        for (let j = 0; j < n; j++) {
          chunks.push(encodeFrame(`&${h.seq}.${h.rx}`, Buffer.concat([Buffer.from(j === 0 ? 'R' : ''), r.bytes(150)])));
          h.seq = (h.seq + 1) % SEQ_MOD;
        }
        if (r.int(2)) {
          chunks.push(encodeFrame(`$${h.seq}.${h.rx}`, r.bytes(10)));
          h.seq = (h.seq + 1) % SEQ_MOD;
        }
        break;
      }
      case 5: // bad escapes and a DLE at the end
        chunks.push(rawFrame(Buffer.from(`C${h.seq}.${h.rx} 1 echo \x10${'ABCDEFGHIKLMNOQRSTUVWXYZ\x10 '[r.int(26)]}`, 'latin1')));
        chunks.push(rawFrame(Buffer.from(`C${h.seq}.${h.rx} 1 echo \x10`, 'latin1')));
        break;
      case 6: // overlong lines, with and without ~, sometimes split over several chunks
        chunks.push(Buffer.concat([Buffer.from('~C'), r.bytes(256 + r.int(2000)).map((b) => (b === 10 ? 11 : b)), Buffer.from('\n')]));
        break;
      case 7: // stray unsequenced frames: S with this nonce or malformed, A with odd acks/nonces, Y, B
        chunks.push(
          [
            encodeFrame(`S${h.nonce} ${255 + r.int(5000)}`),
            encodeFrame(`S0 255`),
            encodeFrame(`S${r.int(1e6)}`),
            encodeFrame(`A${r.int(SEQ_MOD)} 1 ${255 + r.int(2000)} ${h.nonce} 0`),
            encodeFrame(`A${r.int(99999)} 1 255 ${r.int(1e9)} ${r.int(3)}`),
            encodeFrame('Y1'),
            encodeFrame(`Y${r.int(9)}`),
            encodeFrame(`B1 2`),
          ][r.int(8)],
        );
        break;
      case 8: // bad CRC of a valid call, and a truncated line
        {
          const good = encodeFrame(`C${h.seq}.${h.rx}`, '9 echo 1');
          good[good.length - 2] = good[good.length - 2] === 0x30 ? 0x31 : 0x30;
          chunks.push(good, good.subarray(0, r.int(good.length - 1)), Buffer.from('\n'));
        }
        break;
      case 9: // CR/LF noise and short ~ lines
        chunks.push(Buffer.from(['\r\n', '~\n', '~C\r\n', '~Y 0000000\n', '\n\n'][r.int(5)], 'latin1'));
        break;
      case 10: // a bad value token in an in-order call: answered X BADARG (counted as a reply)
        if (r.int(4) === 0) {
          const id = 60000 + i;
          chunks.push(encodeFrame(`C${h.seq}.${h.rx}`, `${id} echo b99999:xx`));
          h.seq = (h.seq + 1) % SEQ_MOD;
          realIds.push(-id);
          replies++;
        }
        break;
      case 11: {
        // in-order bundles (M frames, docs/protocol.md section 2) that are not, or not only, calls:
        // garbage, a length past the end, a length of 0, a message that is not a call, and that
        // followed by a real call (which must run once: the agent reads bundles whatever hello said)
        const junk = r.bytes(r.int(60)).map((b) => (b === 10 ? 11 : b));
        const notCall = Buffer.concat([Buffer.from(`${junk.length + 1} x`), junk]);
        const v = r.int(5);
        let body: Buffer;
        if (v === 0) body = Buffer.from(junk);
        else if (v === 1) body = Buffer.concat([Buffer.from(`${junk.length + 5} `), junk]);
        else if (v === 2) body = Buffer.from('0 ');
        else if (v === 3) body = notCall;
        else {
          const id = 30000 + i;
          const c = callMessage(id, 'echo', [id]);
          body = Buffer.concat([notCall, Buffer.from(`${c.length} `), c]);
          realIds.push(id);
          replies++;
        }
        chunks.push(encodeFrame(`M${h.seq}.${h.rx}`, body));
        h.seq = (h.seq + 1) % SEQ_MOD;
        break;
      }
      case 12: {
        // short heads (docs/protocol.md section 1; the core reads them whatever hello said): a valid
        // CRC over a head with a byte that is no digit, an old sequence number, a bad escape, a
        // flipped CRC digit and a cut line, or a real call with a short head
        const v = r.int(5);
        if (v === 0) {
          const notDigit = [0x20, 0x2f, 0x70, 0x7e, 0xff][r.int(5)];
          const head = Buffer.from(['cftmrxepl'.charCodeAt(r.int(9)), 0x30 + r.int(64), 0x30 + r.int(64), 0x30 + r.int(64), 0x30 + r.int(64)]);
          head[1 + r.int(4)] = notDigit;
          chunks.push(rawShort(Buffer.concat([head, r.bytes(r.int(80)).map((b) => (b === 10 ? 11 : b))])));
        } else if (v === 1) {
          chunks.push(encodeShortFrame(shortHead('CRXEPLM&$'[r.int(9)], wrongSeq(), r.int(SEQ_MOD)), r.bytes(r.int(120))));
        } else if (v === 2) {
          chunks.push(rawShort(Buffer.from(`${shortHead('C', h.seq, h.rx)}1 echo \x10${'ABCDEFGHIKLMNOQRSTUVWXYZ\x10 '[r.int(26)]}`, 'latin1')));
        } else if (v === 3) {
          const g = encodeShortFrame(shortHead('C', h.seq, h.rx), '9 echo 1');
          g[g.length - 2 - r.int(6)] ^= 1 << r.int(6);
          chunks.push(g, g.subarray(0, r.int(g.length - 1)), Buffer.from('\n'));
        } else {
          const id = 40000 + i;
          h.rx = replies;
          h.short = true;
          chunks.push(h.ack(), h.call(id, 'echo', [id]));
          h.short = false;
          realIds.push(id);
          replies++;
        }
        break;
      }
      default: {
        // a real call, with the host's acknowledgement of everything so far
        const id = 10000 + i;
        h.rx = replies;
        chunks.push(h.ack(), h.call(id, 'echo', [id, r.bytes(r.int(60))]));
        realIds.push(id);
        replies++;
      }
    }
    if (i % 97 === 0) chunks.push(Buffer.from('%%F\n')); // batch boundaries (the agent's per-batch A)
  }
  h.rx = replies;
  chunks.push(Buffer.from('%%F\n'), h.ack(), h.call(3, 'hello', [2, 4096]), h.call(4, 'echo', ['still here']));
  replies += 2;
  h.rx = replies;
  chunks.push(Buffer.from('%%F\n'), h.ack(), h.call(5, 'gc'), h.call(6, 'agent.stats'), h.call(7, 'count'));

  const out = runCoreDriver('5.1', Buffer.concat(chunks), { chunk: -1 });
  h.rx = 0;
  h.receive(out);
  h.assertClean('the agent under fuzzing');
  assert.equal(h.logs.length, 0, `no stray output: ${h.logs.slice(0, 3).join(' | ')}`);
  assert.equal(txt((h.values(3)[0] as Map<string, unknown>).get('family') as Uint8Array), 'driver', 'hello after the fuzz');
  assert.deepEqual(h.values(4).map(txt), ['still here']);
  const echoes = realIds.filter((id) => id > 0);

  for (const id of echoes) assert.equal(h.values(id)[0], id, `call ${id}`);
  for (const id of realIds.filter((x) => x < 0)) assert.equal(h.code(-id), 'BADARG');
  for (const id of realIds) assert.equal(h.repliesTo(Math.abs(id)), 1, `call ${Math.abs(id)} answered once`);
  assert.deepEqual(h.values(7), [echoes.length + 1], 'echo ran once per real call (+ "still here")');
  const before = h.values(2)[0] as number;
  const after = h.values(5)[0] as number;
  const st = h.values(6)[0] as Map<string, number>;
  assert.ok(st.get('bad')! > 2000, `bad lines counted (${st.get('bad')})`);
  assert.ok(st.get('dup')! + st.get('ahead')! > 500, 'out-of-order frames counted');
  t.diagnostic(`heap after hello ${before} KB, after the fuzz ${after} KB`);
  assert.ok(after - before < 16, `heap grew ${after - before} KB (from ${before} KB to ${after} KB)`);
  assert.equal(h.logs.length, 0);
  assert.equal(echoes.length > 500, true, `real calls mixed in: ${echoes.length}`);
});
