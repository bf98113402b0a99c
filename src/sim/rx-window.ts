/**
 * Family-independent piece of the simulated receive windows (LuatOS TCP_WND, Luat's receive
 * buffer): Node hands a socket's bytes over in chunks of any size, the module takes only what
 * its window has room for, and the rest waits in a "held" list, as in the peer's send buffer.
 */

/**
 * Moves up to `room` bytes from the front of `held` to the end of `rx`, splitting a chunk when
 * only part of it fits (the rest stays first in `held`). Both arrays are changed in place.
 *
 * @param held chunks not yet in the window, oldest first
 * @param rx the socket's unread chunks, oldest first
 * @param room free bytes in the window (≤ 0: nothing moves)
 * @returns the bytes moved
 */
export function fillFromHeld(held: Buffer[], rx: Buffer[], room: number): number {
  let moved = 0;
  while (held.length && moved < room) {
    const head = held[0];
    const take = Math.min(room - moved, head.length);
    rx.push(take === head.length ? head : head.subarray(0, take));
    moved += take;
    if (take === head.length) held.shift();
    else held[0] = head.subarray(take);
  }
  return moved;
}
