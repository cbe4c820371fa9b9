package mock

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"testing"
)

// embeddingList is an embeddings response with float vectors.
type embeddingList struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func TestEmbeddings(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		n      int
		tokens int
	}{
		{"string", `"hello world"`, 1, 3},
		{"array", `["hello world","hello world","abc"]`, 3, 3 + 3 + 1},
		{"unicode", `"✓✓✓✓✓"`, 1, 2},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"model":"text-embedding-3-small","input":` + tt.input + `}`
			e := decode[embeddingList](t, ts.post("/v1/embeddings", body, 200).body)
			if e.Object != "list" || e.Model != "text-embedding-3-small" || len(e.Data) != tt.n {
				t.Fatalf("envelope object=%q model=%q %d items, want %d", e.Object, e.Model, len(e.Data), tt.n)
			}
			if e.Usage.PromptTokens != tt.tokens || e.Usage.TotalTokens != tt.tokens {
				t.Errorf("usage %+v, want %d", e.Usage, tt.tokens)
			}
			for i, d := range e.Data {
				if d.Object != "embedding" || d.Index != i || len(d.Embedding) != embeddingDims {
					t.Errorf("item %d: object=%q index=%d dims=%d", i, d.Object, d.Index, len(d.Embedding))
				}
				norm := 0.0
				for _, f := range d.Embedding {
					norm += f * f
				}
				if math.Abs(norm-1) > 1e-9 {
					t.Errorf("item %d: squared norm %v, want 1", i, norm)
				}
			}
			again := decode[embeddingList](t, ts.post("/v1/embeddings", body, 200).body)
			for i := range e.Data {
				if !equalFloats(e.Data[i].Embedding, again.Data[i].Embedding) {
					t.Errorf("item %d differs between identical requests", i)
				}
			}
		})
	}
}

func TestEmbeddingsDistinguishInputs(t *testing.T) {
	ts := newTestServer(t, Options{})
	e := decode[embeddingList](t, ts.post("/v1/embeddings", `{"input":["a","b","a"]}`, 200).body)
	if equalFloats(e.Data[0].Embedding, e.Data[1].Embedding) {
		t.Error(`"a" and "b" got the same vector`)
	}
	if !equalFloats(e.Data[0].Embedding, e.Data[2].Embedding) {
		t.Error(`"a" got two different vectors`)
	}
	e = decode[embeddingList](t, ts.post("/v1/embeddings", `{"input":["é","\u00e9"]}`, 200).body)
	if !equalFloats(e.Data[0].Embedding, e.Data[1].Embedding) {
		t.Error(`"é" and "\u00e9" got different vectors`)
	}
	if e.Model != defaultModel {
		t.Errorf("model %q, want %q", e.Model, defaultModel)
	}
}

func TestEmbeddingsBase64(t *testing.T) {
	ts := newTestServer(t, Options{})
	floats := decode[embeddingList](t, ts.post("/v1/embeddings", `{"input":"x"}`, 200).body)
	b64 := decode[struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}](t, ts.post("/v1/embeddings", `{"input":"x","encoding_format":"base64"}`, 200).body)
	raw, err := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
	if err != nil || len(raw) != 4*embeddingDims {
		t.Fatalf("decoding base64 embedding: %d bytes, %v", len(raw), err)
	}
	for i, f := range floats.Data[0].Embedding {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != float32(f) {
			t.Errorf("component %d: base64 %v, float %v", i, got, f)
		}
	}
}

func TestEmbeddingsBadInput(t *testing.T) {
	tests := []struct{ name, body string }{
		{"missing input", `{"model":"m"}`},
		{"empty array", `{"input":[]}`},
		{"token ids", `{"input":[1,2,3]}`},
		{"number", `{"input":5}`},
		{"bad encoding_format", `{"input":"x","encoding_format":"hex"}`},
	}
	ts := newTestServer(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.post("/v1/embeddings", tt.body, 400)
			checkErrorBody(t, r.body, "invalid_request_error")
		})
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
