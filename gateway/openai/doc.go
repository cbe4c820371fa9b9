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
// JSON is read by small scanners in this package (scan.go, validate.go)
// rather than a tree-building parser: they walk a document once, without
// recursion and without allocating, descend only into the members the
// gateway needs, and stop at MaxNestingDepth, so hostile input costs bounded
// time, stack and memory. Request bodies are validated strictly (RFC 8259,
// as encoding/json.Valid); upstream payloads are checked where they are
// read. The tests fuzz both against encoding/json and against a reading
// with github.com/valyala/fastjson (reference_test.go), and
// BenchmarkValidate, BenchmarkChunkReader and BenchmarkResponseReader time
// the scanners against fastjson.
package openai
