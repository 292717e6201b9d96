// novate: the TypeScript SDK of the novate clearing engine.
export { Engine } from './engine';
export { Client, REMOTE_EVENTS_BUFFER_MAX, connect } from './client';
export { encodeBatch, encodeCommand, type CommandInput } from './commands';
export { toToml, type EngineConfig } from './config';
export { BusyError, ClosedError, ConfigError, EventsOverflowError, InputError, NovateError, type RejectName } from './errors';
export { EventStream, decodeEvents } from './events';
export { PRICE_SCALE, formatFixed, money, price } from './price';
export * from './types';
