// Package ratelimit enforces each API key's requests and tokens per minute,
// atomically in Redis (GCRA on Redis server time) so that every gateway
// replica shares one budget, with an in-process limiter for single-instance
// mode and for when Redis is unreachable.
package ratelimit
