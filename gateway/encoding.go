package gateway

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"

	"github.com/valyala/fasthttp"
)

// The gateway parses upstream answers and forwards them without their
// Content-Encoding header, so it asks upstream for identity
// (copyRequestHeaders). An upstream that compresses anyway is decoded here:
// gzip and deflate (zlib, RFC 9110), up to maxUpstreamBody decoded bytes
// however small the compressed body, so a zip bomb costs at most what an
// uncompressed answer may. Any other coding (br, zstd, a list of codings…)
// is answered 502, before its body is read: a body is never forwarded still
// encoded.

var (
	errUpstreamCoding   = errors.New("upstream answered with a content coding the gateway does not decode")
	errUpstreamTooLarge = errors.New("upstream response too large")
)

// Content codings the gateway decodes.
const (
	codingIdentity = iota
	codingGzip
	codingDeflate
	codingOther
)

// contentCoding classifies the response's Content-Encoding (case-
// insensitive; an absent or empty header is identity).
func contentCoding(h *fasthttp.ResponseHeader) int {
	ce := bytes.TrimSpace(h.ContentEncoding())
	switch {
	case len(ce) == 0 || bytes.EqualFold(ce, []byte("identity")):
		return codingIdentity
	case bytes.EqualFold(ce, []byte("gzip")) || bytes.EqualFold(ce, []byte("x-gzip")):
		return codingGzip
	case bytes.EqualFold(ce, []byte("deflate")):
		return codingDeflate
	}
	return codingOther
}

// decodable reports whether the gateway can forward the response's body:
// uncompressed, or in a coding it decodes.
func decodable(resp *fasthttp.Response) bool {
	return contentCoding(&resp.Header) != codingOther
}

// newDecoder returns a reader of r decoded from coding (gzip or deflate).
// It reads the coding's header from r.
func newDecoder(coding int, r io.Reader) (io.Reader, error) {
	var (
		d   io.Reader
		err error
	)
	switch coding {
	case codingGzip:
		d, err = gzip.NewReader(r)
	case codingDeflate:
		d, err = zlib.NewReader(r)
	default:
		return nil, errUpstreamCoding
	}
	if err != nil {
		return nil, fmt.Errorf("decoding upstream body: %w", err)
	}
	return d, nil
}

// readUpstreamBody returns the whole body of a buffered answer, or of a
// streamed one that is not forwarded as a stream, decoded, at most limit
// bytes either way (the proxy's is maxUpstreamBody). A coding it does not
// decode fails before the body is read, and the body is abandoned.
func readUpstreamBody(resp *fasthttp.Response, limit int) ([]byte, error) {
	coding := contentCoding(&resp.Header)
	if coding == codingOther {
		if bs, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
			bs.CloseWithError(errUpstreamCoding) //nolint:errcheck // abandoning the body
		}
		return nil, fmt.Errorf("%w: %q", errUpstreamCoding, resp.Header.ContentEncoding())
	}
	body, err := readBounded(resp, limit)
	if err != nil || coding == codingIdentity || len(body) == 0 {
		return body, err
	}
	d, err := newDecoder(coding, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(d, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("decoding upstream body: %w", err)
	}
	if len(out) > limit {
		return nil, errUpstreamTooLarge
	}
	return out, nil
}

// upstreamStream returns the body stream of a streamed answer the gateway
// forwards as it arrives, decoded if it is compressed (decodable must hold)
// and then at most limit decoded bytes; nil if the response has no body
// stream.
func upstreamStream(resp *fasthttp.Response, limit int) fasthttp.ReadCloserWithError {
	src, _ := resp.BodyStream().(fasthttp.ReadCloserWithError)
	coding := contentCoding(&resp.Header)
	if src == nil || coding == codingIdentity {
		return src
	}
	return &decodingStream{src: src, coding: coding, left: int64(limit)}
}

// decodingStream decodes a compressed upstream stream as it is read, at
// most left bytes: past them, Read fails with errUpstreamTooLarge. The
// decoder is made by the first Read, on the goroutine copying the stream,
// since it reads the coding's header. CloseWithError may be called from
// another goroutine to interrupt a blocked Read, as the proxy's shutdown
// does: it touches only src.
type decodingStream struct {
	src    fasthttp.ReadCloserWithError
	coding int
	dec    io.Reader // nil until the first Read
	left   int64
}

func (d *decodingStream) Read(p []byte) (int, error) {
	if d.dec == nil {
		dec, err := newDecoder(d.coding, d.src)
		if err != nil {
			return 0, err
		}
		d.dec = dec
	}
	if int64(len(p)) > d.left+1 {
		p = p[:d.left+1] // one byte beyond the cap tells a body that exceeds it
	}
	n, err := d.dec.Read(p)
	if int64(n) > d.left {
		n, err = int(d.left), errUpstreamTooLarge
	}
	d.left -= int64(n)
	return n, err
}

func (d *decodingStream) CloseWithError(err error) error { return d.src.CloseWithError(err) }
