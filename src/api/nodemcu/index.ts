/**
 * The NodeMCU (ESP8266) family: the `net` facade, and its error type (byte streams
 * over it: src/streams, `mod.createConnection`). See docs/nodemcu.md.
 */
export * from './net.js';
export * from './errors.js';
