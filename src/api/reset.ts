/**
 * Module resets as errors, for the facades' streams and waits (every family).
 *
 * A reset (the module's boot epoch changed: `RpcClient.resets` emits, calls in flight fail
 * with `RESET`) destroys every socket, callback and request of the previous boot. A stream
 * or a wait tied to one of them would otherwise stay silent forever, or until its timeout:
 * these helpers end it with a {@link ResetError} (code `RESET`) the moment the reset is seen,
 * and at once when the object already belongs to a previous boot.
 */
import { Observable, type MonoTypeOperatorFunction } from 'rxjs';
import { ResetError } from '../errors.js';

/** What the helpers need of an RPC session (an `RpcClient`). */
export interface ResetSource {
  /** Module resets (hot); completes when the session closes. */
  readonly resets: Observable<{ previousEpoch?: number; epoch?: number }>;
  /** The module's current boot epoch. */
  readonly currentEpoch: number;
}

/**
 * The error a stream or wait of `what` ends with because the module reset.
 * @param what the stream or wait, e.g. `data() of socket#3`.
 * @param ev the reset event, when known (its epochs go into the message and `context`).
 * @param epoch the boot the object belonged to, when known (stale object, no event).
 */
export function resetError(what: string, ev?: { previousEpoch?: number; epoch?: number }, epoch?: number): ResetError {
  const from = ev?.previousEpoch ?? epoch;
  const to = ev?.epoch;
  const epochs = from !== undefined && to !== undefined ? ` (boot epoch ${from} -> ${to})` : from !== undefined ? ` (it belongs to boot epoch ${from})` : '';
  return new ResetError(`${what}: the module reset${epochs}; its sockets, callbacks and requests of the previous boot are gone`, {
    what,
    ...(from !== undefined ? { previousEpoch: from } : {}),
    ...(to !== undefined ? { epoch: to } : {}),
  });
}

/**
 * A stream that never emits and errors with {@link ResetError} at the module's next reset,
 * or at once on subscribe when `epoch` is given and is not the module's current boot.
 * It never completes (not even when the session closes): combine it with a stream that does.
 * @param rpc the session (`RpcClient`).
 * @param what names the stream or wait in the error message.
 * @param epoch boot epoch the guarded object belongs to. @default no staleness check
 */
export function resetAsError(rpc: ResetSource, what: string | (() => string), epoch?: number): Observable<never> {
  const name = () => (typeof what === 'function' ? what() : what);
  return new Observable<never>((sub) => {
    if (epoch !== undefined && rpc.currentEpoch !== epoch) {
      sub.error(resetError(name(), undefined, epoch));
      return;
    }
    const s = rpc.resets.subscribe({ next: (ev) => sub.error(resetError(name(), ev, epoch)) });
    return () => s.unsubscribe();
  });
}

/**
 * Operator: mirror the source (values, error, completion) but error with {@link ResetError}
 * when the module resets while subscribed, or on subscribe when `epoch` is stale
 * (see {@link resetAsError}). The source is unsubscribed when that happens.
 * @param rpc the session (`RpcClient`).
 * @param what names the stream in the error message.
 * @param epoch boot epoch the stream's object belongs to. @default no staleness check
 */
export function endOnReset<T>(rpc: ResetSource, what: string | (() => string), epoch?: number): MonoTypeOperatorFunction<T> {
  return (source) =>
    new Observable<T>((sub) => {
      const r = resetAsError(rpc, what, epoch).subscribe({ error: (e) => sub.error(e) });
      if (sub.closed) return () => r.unsubscribe();
      const s = source.subscribe(sub);
      return () => {
        r.unsubscribe();
        s.unsubscribe();
      };
    });
}

/**
 * Promise form: settle like `p`, or reject with {@link ResetError} if the module resets first
 * (or at once when `epoch` is stale). Stops watching once settled.
 * @param rpc the session (`RpcClient`).
 * @param p the wait to guard.
 * @param what names the wait in the error message.
 * @param epoch boot epoch the wait belongs to. @default no staleness check
 */
export function rejectOnReset<T>(rpc: ResetSource, p: Promise<T>, what: string | (() => string), epoch?: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const r = resetAsError(rpc, what, epoch).subscribe({ error: reject });
    p.then(
      (v) => {
        r.unsubscribe();
        resolve(v);
      },
      (e) => {
        r.unsubscribe();
        reject(e);
      },
    );
  });
}
