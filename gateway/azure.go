package gateway

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
)

// Azure OpenAI's own URLs, as its SDKs' Azure clients call them:
//
//	POST /openai/deployments/{deployment}/chat/completions?api-version=...
//	POST /openai/deployments/{deployment}/completions?api-version=...
//	POST /openai/deployments/{deployment}/embeddings?api-version=...
//	POST /openai/responses?api-version=...   (the model in the body)
//	GET  /openai/models?api-version=...
//
// They are served exactly as their /v1 counterparts (same credentials, the
// api-key header included; same limits, routing and record); api-version
// is accepted and ignored, since the gateway speaks to each upstream in its
// own dialect. A deployment names a model through azure_deployments, or is
// the model's own name; one that names no routed model is the 404 of an
// unknown model.

const azurePrefix = "/openai/"

// azureDeploymentEndpoints are the endpoints under /openai/deployments/{d}.
var azureDeploymentEndpoints = [...]struct {
	suffix string
	ep     openai.Endpoint
}{
	{"/chat/completions", openai.ChatCompletions},
	{"/completions", openai.Completions},
	{"/embeddings", openai.Embeddings},
}

// azureRoute serves path, which starts with azurePrefix (percent-decoded,
// as fasthttp gives it).
func (s *Server) azureRoute(rc *fasthttp.RequestCtx, reqID string, path []byte) error {
	rest := path[len(azurePrefix):]
	switch string(rest) {
	case "responses":
		if !rc.IsPost() {
			return errMethodNotAllowed
		}
		return s.proxy(rc, reqID, openai.Responses, "")
	case "models":
		if !rc.IsGet() {
			return errMethodNotAllowed
		}
		return s.models(rc)
	}
	dep, ok := bytes.CutPrefix(rest, []byte("deployments/"))
	if !ok {
		return errNotFound
	}
	for _, d := range azureDeploymentEndpoints {
		if name, ok := bytes.CutSuffix(dep, []byte(d.suffix)); ok && len(name) > 0 && bytes.IndexByte(name, '/') < 0 {
			if !rc.IsPost() {
				return errMethodNotAllowed
			}
			return s.proxy(rc, reqID, d.ep, string(name))
		}
	}
	return errNotFound
}

// deploymentModel is the model an Azure deployment name stands for.
func (s *Server) deploymentModel(dep string) string {
	if m, ok := s.cfg.AzureDeployments[dep]; ok {
		return m
	}
	return dep
}

// deploymentBody returns body naming the model of deployment dep, for a
// request that came on an Azure deployment path. The model is then parsed
// and routed as any other: a deployment that names no routed model gets
// the 404 of an unknown model.
func (s *Server) deploymentBody(dep string, body []byte) ([]byte, error) {
	return openai.WithModel(body, s.deploymentModel(dep))
}
