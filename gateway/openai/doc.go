// Package openai understands the OpenAI wire formats the gateway proxies:
// it reads what a request asks for (ParseRequest), asks upstream for stream
// usage (WithStreamUsage), tees a server-sent event stream while forwarding
// it unchanged (StreamTee), reads non-streaming answers (ParseResponse) and
// estimates token counts when upstream reports none (EstimateTokens).
//
// The package does no I/O. Every function is pure or works on a value owned
// by its caller, and every buffer it keeps is bounded: request nesting by
// MaxNestingDepth, chat history by MaxMessages, the model name by
// MaxModelBytes, a pending stream event by MaxEventBytes, and assembled
// response text by the caller's maxText.
//
// Package-level functions are safe for concurrent use. A StreamTee is not;
// it belongs to the one goroutine that copies a stream.
//
// JSON is read with github.com/valyala/fastjson (pooled parsers, no
// reflection) and with small iterative scanners in this package that find
// value boundaries without recursion, so that hostile nesting costs a
// bounded amount of stack and time.
package openai
