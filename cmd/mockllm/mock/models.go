package mock

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// modelIDs are the models GET /v1/models lists. Any other model name is
// accepted by the inference endpoints too; the list is informational.
func modelIDs() []string {
	return []string{"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", defaultModel}
}

// modelsCreated is the fixed "created" time of every listed model
// (2024-01-01T00:00:00Z), so the body is deterministic.
const modelsCreated = 1704067200

// modelsBody returns the GET /v1/models body, built once by NewServer.
func modelsBody() []byte {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list"}
	for _, id := range modelIDs() {
		list.Data = append(list.Data, model{ID: id, Object: "model", Created: modelsCreated, OwnedBy: "mockllm"})
	}
	b, err := json.Marshal(list)
	if err != nil {
		// Marshalling these fixed types cannot fail.
		panic("mockllm: encoding model list: " + err.Error())
	}
	return b
}

// listModels serves GET /v1/models from the precomputed body.
func (s *Server) listModels(rc *fasthttp.RequestCtx, _ knobs) error {
	rc.SetContentType("application/json")
	rc.SetBody(s.models)
	return nil
}
