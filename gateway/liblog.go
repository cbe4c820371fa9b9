package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// LibraryLogger carries a library's printf-style log lines (fasthttp's,
// go-redis's) into zap without any text a caller could have chosen. The
// format is the library's own constant; of the arguments only numbers,
// durations, booleans and network addresses are kept, errors become their
// class (errorClass), and every string, byte slice or other value becomes
// "[redacted]". So a library that prints a raw request (fasthttp does on a
// malformed one, credential and body included) cannot put a key, a token
// or prompt text in the process log. It is safe for concurrent use.
type LibraryLogger struct {
	log *zap.Logger
}

// NewLibraryLogger returns a LibraryLogger writing at info level to log.
func NewLibraryLogger(log *zap.Logger) LibraryLogger {
	return LibraryLogger{log: log.WithOptions(zap.WithCaller(false))}
}

var _ fasthttp.Logger = LibraryLogger{}

// Printf logs one line of the library; see LibraryLogger.
func (l LibraryLogger) Printf(format string, args ...any) {
	if ce := l.log.Check(zap.InfoLevel, "library log"); ce != nil {
		safe := make([]any, len(args))
		for i, a := range args {
			safe[i] = redactArg(a)
		}
		ce.Write(zap.String("line", fmt.Sprintf(format, safe...)))
	}
}

// redactArg keeps what cannot carry request text and replaces the rest.
func redactArg(a any) any {
	switch v := a.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr, float32, float64, time.Duration:
		return v
	case net.Addr:
		return v.String()
	case net.IP:
		return v.String()
	case error:
		return errorClass(v)
	default:
		return "[redacted]"
	}
}

// errorClass names the kind of a connection or parse error without its
// text, which may quote the request (or an upstream's response) verbatim.
func errorClass(err error) string {
	var small *fasthttp.ErrSmallBuffer
	var chunk *fasthttp.ErrBrokenChunk
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return "body_too_large"
	case errors.As(err, &small), errors.Is(err, fasthttp.ErrSmallReadBuffer):
		return "headers_too_large"
	case errors.Is(err, fasthttp.ErrBadTrailer):
		return "bad_trailer"
	case errors.Is(err, fasthttp.ErrDuplicateContentLength):
		return "duplicate_content_length"
	case errors.Is(err, fasthttp.ErrNonNumericChars):
		return "bad_content_length"
	case errors.Is(err, fasthttp.ErrUnsupportedTransferEncoding):
		return "bad_transfer_encoding"
	case errors.As(err, &chunk):
		return "broken_chunk"
	case errors.Is(err, fasthttp.ErrMissingRequestMethod), errors.Is(err, fasthttp.ErrUnsupportedRequestMethod),
		errors.Is(err, fasthttp.ErrExtraWhitespaceInRequestLine), errors.Is(err, fasthttp.ErrEmptyRequestURI):
		return "bad_request_line"
	case errors.Is(err, fasthttp.ErrGetOnly):
		return "method_not_allowed"
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.As(err, &ne):
		return "network"
	default:
		return "other"
	}
}
