/**
 * Emulated `net`, `misc` and `link` of the simulated Air724UG. On the module these are
 * LuaTask lib files driving the AT channel through ril.lua; here they are tables whose
 * state follows the documented behaviour (docs/firmware/luat-socketcore.md
 * section 2):
 * - `net.getState()`: "INIT", then "REGISTERED" (event NET_STATE_REGISTERED) or "UNREGISTER".
 * - `net.getRssi()` 0..31 and `net.getRsrp()` are CACHED: 0 / -140 until `net.csqQueryPoll` or
 *   `net.startQueryAll` ran a query (event GSM_SIGNAL_REPORT_IND).
 * - `misc.getImei()` is "" until the AT+CGSN reply arrives (event IMEI_READY_IND).
 * - `link.isReady()` turns true just before IP_READY_IND is published (4G: registered, then the
 *   default bearer has an address, then 100 ms); IP_ERROR_IND when the PDP context is lost, and
 *   the lib re-activates it after 2 s.
 */
import type { LuaVm } from '../lua-vm.js';
import type { Scheduler } from '../scheduler.js';

/** Identity and radio behaviour of the simulated module. Every field is optional. */
export interface LuatRadioOptions {
  /** `misc.getModelType()`. @default "Air724UG" */
  model?: string;
  /** `misc.getImei()` once known. @default "866714040000017" */
  imei?: string;
  /** Milliseconds from boot until the IMEI is known. @default 30 */
  imeiDelayMs?: number;
  /** CSQ 0..31 a query reports (99 becomes 0). @default 24 */
  csq?: number;
  /** RSRP a query reports (dBm, -140..-40). @default -85 */
  rsrp?: number;
  /** Milliseconds from boot to NET_STATE_REGISTERED; -1 = never registers. @default 40 */
  registerDelayMs?: number;
  /** Milliseconds from registration to IP_READY_IND. @default 60 */
  ipReadyDelayMs?: number;
  /** Milliseconds after IP_ERROR_IND before the lib re-activates the PDP context (then IP_READY_IND). @default 2000 */
  reactivateMs?: number;
}

export interface LuatRadio {
  /** Whether `link.isReady()` is true. */
  ready(): boolean;
  /** Drop the data link now (PDP deactivated: IP_ERROR_IND; sockets see the loss); it comes back after `reactivateMs`. */
  dropLink(): void;
  /** Called when the link goes down (the socket layer breaks its connections). */
  onLinkDown(fn: () => void): void;
  shutdown(): void;
}

export function installRadio(vm: LuaVm, scheduler: Scheduler, o: LuatRadioOptions, log: (l: string) => void, fatal: (m: string) => void): LuatRadio {
  let state = 'INIT';
  let rssi = 0;
  let rsrp = -140;
  let imei = '';
  let isReady = false;
  let csqTimer: (() => void) | undefined;
  let down = false;
  const downListeners: Array<() => void> = [];
  const cancels: Array<() => void> = [];
  const after = (ms: number, fn: () => void) => {
    const c = scheduler.after(ms, () => {
      if (!down) fn();
    });
    cancels.push(c);
  };
  const publish = (...args: Array<string | number | boolean>) => {
    const r = vm.callGlobal('__luat_publish', ...args);
    if (r.error) fatal(r.error);
  };
  const csq = Math.max(0, Math.min(31, o.csq === 99 ? 0 : (o.csq ?? 24)));

  after(o.imeiDelayMs ?? 30, () => {
    imei = o.imei ?? '866714040000017';
    publish('IMEI_READY_IND');
  });
  const reg = o.registerDelayMs ?? 40;
  if (reg >= 0) {
    after(reg, () => {
      state = 'REGISTERED';
      publish('NET_STATE_REGISTERED');
      after(o.ipReadyDelayMs ?? 60, () => {
        isReady = true;
        log('link: IP_READY_IND');
        publish('IP_READY_IND');
      });
    });
  }

  const query = () => {
    after(20, () => {
      rssi = state === 'REGISTERED' ? csq : 0;
      rsrp = state === 'REGISTERED' ? (o.rsrp ?? -85) : -140;
      publish('GSM_SIGNAL_REPORT_IND', true, rssi);
    });
  };
  const poll = (period: number) => {
    csqTimer?.();
    csqTimer = undefined;
    query();
    if (period > 0) {
      const tick = () => {
        csqTimer = scheduler.after(period, () => {
          if (down) return;
          query();
          tick();
        });
      };
      tick();
    }
    return [true];
  };

  vm.registerLib('net', {
    getState: () => [state],
    getRssi: () => [rssi],
    getRsrp: () => [rsrp],
    getNetMode: () => [state === 'REGISTERED' ? 4 : 0],
    getMcc: () => ['460'],
    getMnc: () => ['00'],
    getLac: () => [state === 'REGISTERED' ? '5A1F' : ''],
    getCi: () => [state === 'REGISTERED' ? '0B8C2E01' : ''],
    csqQueryPoll: (a) => poll(a.optInt(1, 0)),
    startQueryAll: (a) => poll(a.optInt(1, 60000)),
    stopQueryAll: () => {
      csqTimer?.();
      csqTimer = undefined;
      return [];
    },
  });
  vm.registerLib('misc', {
    getImei: () => [imei],
    getSn: () => ['A724UG0000000001'],
    getModelType: () => [o.model ?? 'Air724UG'],
    getVbatt: () => [4100],
  });
  vm.registerLib('link', {
    isReady: () => [isReady],
    shut: () => {
      scheduler.post(() => drop());
      return [];
    },
  });

  const drop = () => {
    if (!isReady || down) return;
    isReady = false;
    log('link: PDP deactivated, IP_ERROR_IND');
    for (const fn of downListeners) fn();
    publish('IP_ERROR_IND');
    after(o.reactivateMs ?? 2000, () => {
      if (state !== 'REGISTERED') return;
      isReady = true;
      publish('IP_READY_IND');
    });
  };

  return {
    ready: () => isReady,
    dropLink: drop,
    onLinkDown: (fn) => downListeners.push(fn),
    shutdown: () => {
      down = true;
      csqTimer?.();
      for (const c of cancels) c();
    },
  };
}
