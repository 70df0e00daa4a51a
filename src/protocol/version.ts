/** Wire protocol version. Bump when a message changes shape; peers with another version are refused. */
export const PROTOCOL_VERSION = 2;

/**
 * Largest message on the request and broadcast sockets (ZeroMQ maxMessageSize): libzmq drops a bigger one
 * without telling the sender and cuts the peer off, so kq refuses at the edge what could not be delivered
 * (a job whose assignment would not fit, see MAX_ASSIGNMENT_BYTES).
 */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** An assignment must fit one message, with room for the envelope. */
export const MAX_ASSIGNMENT_BYTES = MAX_MESSAGE_BYTES - 64 * 1024;
/**
 * Largest update an agent sends (log batches are cut to LOG_BATCH_BYTES, lines to MAX_LOG_LINE_BYTES):
 * the update port refuses bigger ones, which bounds what one peer can make kq hold (× its receive HWM).
 */
export const MAX_UPDATE_BYTES = 1024 * 1024;
export const LOG_BATCH_BYTES = 256 * 1024;
export const MAX_LOG_LINE_BYTES = 128 * 1024;
