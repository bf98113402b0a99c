/**
 * The NodeMCU (ESP8266) family: the `net` facade, its error type, and the helpers
 * that follow the firmware's rules (one send in flight until "sent"). See docs/nodemcu.md.
 */
export * from './net.js';
export * from './errors.js';
export * from './connection.js';
