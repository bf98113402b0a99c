/**
 * The Luat (legacy openLuat, Air724UG / Air720) family: the `socketcore` facade, its
 * constants and the helpers that follow the core's rules. See docs/luat.md.
 */
export * from './constants.js';
export * from './socketcore.js';
export * from './connection.js';
