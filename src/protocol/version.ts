/** Wire protocol version. Bump when a message changes shape; peers with another version are refused. */
export const PROTOCOL_VERSION = 1;

/** Largest wire message kq accepts (ZeroMQ maxMessageSize); bigger ones are dropped by libzmq itself. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
