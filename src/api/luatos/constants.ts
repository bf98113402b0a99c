/**
 * Constants of the LuatOS `socket` library as the firmware defines them
 * (docs/firmware/luatos.md: event values from NA.h:49-90, adapter
 * numbers from the adapter enum; the doc's "ETH0 is 5" is stale).
 */

/** Socket callback events (`EV_NW_RESULT_x & 0x0fffffff`). */
export const SocketEvent = {
  LINK: 33554448,
  ON_LINE: 33554449,
  TX_OK: 33554450,
  CLOSED: 33554451,
  EVENT: 33554452,
} as const;
export type SocketEventName = keyof typeof SocketEvent;

/** Name of an event id, or undefined for an unknown id. */
export function eventName(id: number): SocketEventName | undefined {
  for (const [k, v] of Object.entries(SocketEvent)) if (v === id) return k as SocketEventName;
  return undefined;
}

/** Network adapter indexes (`socket.LWIP_GP` ...). Air780E's default is LWIP_GP = 1. */
export const Adapter = {
  LWIP_GP: 1,
  LWIP_STA: 2,
  LWIP_AP: 3,
  LWIP_ETH: 4,
  LWIP_SPI: 5,
  LWIP_USER0: 7,
  LWIP_USER1: 8,
  LWIP_USER2: 9,
  LWIP_USER3: 10,
  LWIP_USER4: 11,
  LWIP_USER5: 12,
  LWIP_USER6: 13,
  LWIP_USER7: 14,
  LWIP_GP_GW: 15,
  LWIP_USB: 16,
  ETH0: 17,
} as const;

/** Highest adapter index the firmware accepts (18 = CUSTOM). */
export const MAX_ADAPTER = 18;

/** `socket.state` values (NA:72-82). */
export const SocketState = {
  HARDWARE_OFFLINE: 0,
  OFFLINE: 1,
  WAITING_DNS: 2,
  CONNECTING: 3,
  TLS_HANDSHAKE: 4,
  ONLINE: 5,
  LISTENING: 6,
  DISCONNECTING: 7,
} as const;
