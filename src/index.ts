/**
 * tether: drive a module's own network stack over a framed UART RPC.
 * Public API. Layers: transport (bytes) → codec (frames) → rpc → api facades → cli.
 */
export { connect, isSimPort, TetherModule, type ConnectOptions, type ModuleInfo } from './api/connect.js';
export { rebootModule, releaseAll, releasedAtOpen, REBOOT_FUNCTIONS, DEFAULT_REBOOT_TIMEOUT_MS, type RebootOptions, type RebootResult } from './api/session.js';
export { LuatosSocket, SocketCtrl, ZBuff, type Result, type SocketEventInfo, type ConfigOptions, type NtpTime } from './api/luatos/socket.js';
export { SocketEvent, Adapter, SocketState, eventName } from './api/luatos/constants.js';
export { RpcClient, parseHello, type HelloInfo, type RpcClientOptions, type CallOptions, type LinkStats, type LogLine, type AgentEvent, type AgentPublish, type ResetEvent } from './rpc/client.js';
export { TetherError, InvalidArgumentError, TimeoutError, ResetError, RemoteError, isTetherError, type TetherErrorCode } from './errors.js';
export { openTransport, parsePortUrl } from './transport/index.js';
export type { Transport } from './transport/transport.js';
export { createMemoryPair, MemoryTransport } from './transport/memory.js';
export { listPorts, type PortInfo } from './transport/ports.js';
export { resolveSerialNumberPort, findBySerialNumber } from './transport/serial-number.js';
export { SimulatedModule, type SimulatedModuleOptions, type SimFamily } from './sim/module.js';
export { SIM_FAMILIES, simFamilyNames } from './sim/families.js';
export { runDiag, type DiagOptions, type DiagReport, type DiagCheck } from './diag/diag.js';
export { startEchoServers, type EchoServers } from './diag/echo-servers.js';
export { loadBench, parseBench, selectModules, type Bench, type BenchModule, type BenchEcho, type BenchEndpoint, type BenchTimeouts } from './bench/bench-file.js';
export { SocksServer, type Dialer, type SocksServerOptions } from './proxy/server.js';
export { moduleDialer } from './proxy/module-dialer.js';
export { PROTOCOL_VERSION, AGENT_VERSION } from './codec/constants.js';
export { Handle, Float, type WireValue } from './codec/values.js';
/** The Luat legacy `socketcore` family (Air724UG / Air720): `luat.LuatSocketcore`, constants. */
export * as luat from './api/luat/index.js';
export { LuatSocketcore } from './api/luat/socketcore.js';
/** The NodeMCU `net` family (ESP8266): `nodemcu.NodeMcuNet`, `nodemcu.NetError`. */
export * as nodemcu from './api/nodemcu/index.js';
export { NodeMcuNet } from './api/nodemcu/net.js';
/**
 * The stream layer: `createConnection` / `createServer` / `createSocket` (also as `mod.createConnection(...)` etc.,
 * installed on TetherModule when this loads): a module's sockets as `net.Socket` / `net.Server` / `dgram.Socket`-like objects.
 */
export { createConnection, createServer, createSocket, driverOf, installModuleMethods, SocketStream, Server, UdpSocket, MAX_DATAGRAM, SocketError, isSocketError, type ConnectionOptions, type RemoteInfo, type SocketErrorReason, type StreamDriver } from './streams/index.js';
