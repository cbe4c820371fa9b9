package mock

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/valyala/fasthttp"
)

// embeddingDims is the length of every vector, whatever the model or the
// "dimensions" parameter asks for.
const embeddingDims = 8

// embeddings serves POST /v1/embeddings. The input is a string or an array
// of strings; each gets embeddingVector of its FNV-1a hash, so equal inputs
// get equal vectors. "encoding_format" may be "float" (the default) or
// "base64" (little-endian float32s, as OpenAI sends them).
func (s *Server) embeddings(rc *fasthttp.RequestCtx, _ knobs) error {
	var req struct {
		Model          string   `json:"model"`
		Input          textList `json:"input"`
		EncodingFormat string   `json:"encoding_format"`
	}
	if err := decodeBody(rc, &req); err != nil {
		return err
	}
	if len(req.Input) == 0 {
		return newAPIError(fasthttp.StatusBadRequest, "'input' must be a non-empty string or array of strings", nil)
	}
	b64 := false
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		return newAPIError(fasthttp.StatusBadRequest,
			fmt.Sprintf("invalid encoding_format %q: want \"float\" or \"base64\"", req.EncodingFormat), nil)
	}
	model := req.Model
	if model == "" {
		model = defaultModel
	}

	buf := s.getBuf()
	b := append((*buf)[:0], `{"object":"list","data":[`...)
	tokens := 0
	for i, in := range req.Input {
		tokens += tokensFor(in.chars)
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = appendInt(b, i)
		b = append(b, `,"embedding":`...)
		b = appendEmbedding(b, embeddingVector(in.hash), b64)
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendJSONString(b, model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = appendInt(b, tokens)
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, tokens)
	b = append(b, "}}"...)
	*buf = b
	s.sendJSON(rc, buf)
	return nil
}

// embeddingVector derives a unit-length vector from h with splitmix64, so
// it is deterministic and spread over [-1, 1].
func embeddingVector(h uint64) [embeddingDims]float64 {
	var v [embeddingDims]float64
	norm := 0.0
	for i := range v {
		h += 0x9e3779b97f4a7c15
		z := h
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		v[i] = float64(z>>11)/(1<<53)*2 - 1
		norm += v[i] * v[i]
	}
	if norm = math.Sqrt(norm); norm > 0 {
		for i := range v {
			v[i] /= norm
		}
	}
	return v
}

// appendEmbedding appends v as a JSON array of numbers, or as a base64
// string of little-endian float32s.
func appendEmbedding(dst []byte, v [embeddingDims]float64, b64 bool) []byte {
	if b64 {
		var raw [embeddingDims * 4]byte
		for i, f := range v {
			binary.LittleEndian.PutUint32(raw[i*4:], math.Float32bits(float32(f)))
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, raw[:])
		return append(dst, '"')
	}
	dst = append(dst, '[')
	for i, f := range v {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	}
	return append(dst, ']')
}
