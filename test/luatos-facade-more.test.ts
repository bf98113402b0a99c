/** LuatOS facade methods for what the agent exposes besides sockets: dft, close_all, rx_cache (issue 8 C11). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstValueFrom } from 'rxjs';
import { connect } from '../src/api/connect.js';
import { InvalidArgumentError } from '../src/errors.js';

test('dft, close_all and rx_cache through the simulated Air780E', async () => {
  const mod = await connect('sim');
  try {
    const s = mod.socket;
    const [dflt, last] = await firstValueFrom(s.dft());
    assert.ok(Number.isInteger(dflt) && Number.isInteger(last), `dft gives adapter numbers, got ${dflt}, ${last}`);
    assert.deepEqual(await firstValueFrom(s.rx_cache()), [32], 'rx_cache is the lwIP block count (32 by default), not bytes');
    const [closed] = await firstValueFrom(s.close_all(dflt));
    assert.equal(typeof closed, 'boolean');
    // bad arguments never reach the wire
    const before = mod.rpc.stats.bytesOut;
    assert.throws(() => s.close_all(undefined as unknown as number), InvalidArgumentError);
    assert.throws(() => s.rx_cache(-1), InvalidArgumentError);
    assert.throws(() => s.dft(1.5), InvalidArgumentError);
    assert.equal(mod.rpc.stats.bytesOut, before);
  } finally {
    await mod.close();
  }
});
