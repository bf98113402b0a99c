/**
 * The Luat (legacy openLuat, Air724UG / Air720) family: the `socketcore` facade and
 * its constants (byte streams over it: src/streams, `mod.createConnection`). See docs/luat.md.
 */
export * from './constants.js';
export * from './socketcore.js';
