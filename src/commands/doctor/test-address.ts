// The client address doctor sends through the live paths (the hook, the
// poprelayd listeners): TEST-NET-1 (RFC 5737), never a real client, so
// recording or asking about it grants no one anything.

export const TEST_ADDRESS = '192.0.2.254';
