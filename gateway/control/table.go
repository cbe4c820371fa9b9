package control

import (
	"github.com/valyala/fasthttp"

	"github.com/bulkheadhq/bulkhead/store"
)

// Query parameters shared by several routes.
var (
	qSince   = param{"since", "string", "RFC 3339 time, inclusive (default: 30 days before until)"}
	qUntil   = param{"until", "string", "RFC 3339 time, exclusive (default: now)"}
	qGroupBy = param{"group_by", "string", "day, model, key or user (default day)"}
)

// routeTable is the admin API. The OpenAPI document is generated from it.
func (s *Server) routeTable() []route {
	const ok, created = fasthttp.StatusOK, fasthttp.StatusCreated
	return []route{
		{method: "POST", pattern: "/admin/v1/session", summary: "Log in to the console: exchange an operator token or a tenant administrator's JWT for a session token",
			access: public, status: created, body: sessionRequest{}, resp: sessionResponse{}, handle: s.login},
		{method: "DELETE", pattern: "/admin/v1/session", summary: "Log out: end the session whose token authenticates this request",
			access: anyone, status: ok, resp: loggedOut{}, handle: s.logout},
		{method: "GET", pattern: "/admin/v1/me", summary: "Who the credential is",
			access: anyone, status: ok, resp: whoami{}, handle: s.me},

		{method: "GET", pattern: "/admin/v1/organizations", summary: "List organizations, oldest first, with keyset paging (a tenant administrator: its own)",
			access: tenantRead, status: ok, resp: orgList{}, handle: s.listOrgs,
			query: []param{{"limit", "integer", "page size, 1 to 200 (default 50)"}, {"after", "string", "next_cursor of the previous page"}}},
		{method: "POST", pattern: "/admin/v1/organizations", summary: "Create an organization (Idempotency-Key honoured)",
			access: operatorWrite, status: created, body: createOrgRequest{}, resp: store.Organization{}, idem: true, handle: s.createOrg},
		{method: "GET", pattern: "/admin/v1/organizations/{id}", summary: "Read an organization",
			access: tenantRead, status: ok, resp: store.Organization{}, handle: s.getOrg},
		{method: "PATCH", pattern: "/admin/v1/organizations/{id}", summary: "Change an organization's name, capture mode or retention",
			access: operatorWrite, status: ok, body: updateOrgRequest{}, resp: store.Organization{}, handle: s.updateOrg},
		{method: "DELETE", pattern: "/admin/v1/organizations/{id}", summary: "Delete an organization and all its data; running gateways forget its keys",
			access: operatorWrite, status: ok, resp: deletedOrg{}, handle: s.deleteOrg},

		{method: "GET", pattern: "/admin/v1/organizations/{id}/keys", summary: "List an organization's keys (never their secrets)",
			access: tenantRead, status: ok, resp: keyList{}, handle: s.listKeys},
		{method: "POST", pattern: "/admin/v1/organizations/{id}/keys", summary: "Create a key; the answer shows the key once (Idempotency-Key honoured; a replay has no key)",
			access: tenantWrite, status: created, body: createKeyRequest{}, resp: createdKey{}, idem: true, handle: s.createKey},
		{method: "PATCH", pattern: "/admin/v1/keys/{id}", summary: "Change a key's limits; running gateways apply them at once",
			access: tenantWrite, status: ok, body: updateKeyRequest{}, resp: store.Key{}, handle: s.updateKey},
		{method: "POST", pattern: "/admin/v1/keys/{id}/rotate", summary: "Rotate a key: a new key now (shown once), the old one working until the overlap ends",
			access: tenantWrite, status: created, body: rotateKeyRequest{}, resp: createdKey{}, handle: s.rotateKey},
		{method: "POST", pattern: "/admin/v1/keys/{id}/revoke", summary: "Revoke a key; every running gateway refuses it within a second",
			access: tenantWrite, status: ok, resp: store.Key{}, handle: s.revokeKey},

		{method: "POST", pattern: "/admin/v1/organizations/{id}/admin-keys", summary: "Make an organization admin key: a tenant administrator's credential (shown once) with exactly a tenant administrator's JWT's rights",
			access: operatorWrite, status: created, body: createAdminKeyRequest{}, resp: createdAdminKey{}, handle: s.createAdminKey},
		{method: "GET", pattern: "/admin/v1/organizations/{id}/admin-keys", summary: "List an organization's admin keys (never the keys)",
			access: operatorRead, status: ok, resp: adminKeyList{}, handle: s.listAdminKeys},
		{method: "POST", pattern: "/admin/v1/admin-keys/{id}/revoke", summary: "Revoke an organization admin key; its console sessions end at their next use",
			access: operatorWrite, status: ok, resp: store.OrgAdminKey{}, handle: s.revokeAdminKey},

		{method: "GET", pattern: "/admin/v1/models", summary: "The whole model catalog: shared models, then each organization's own (operators)",
			access: operatorRead, status: ok, resp: modelList{}, handle: s.listModels},
		{method: "POST", pattern: "/admin/v1/models", summary: "Add a model, shared or an organization's own; running gateways route it at once",
			access: operatorWrite, status: created, body: addModelRequest{}, resp: store.Model{}, handle: s.addModel},
		{method: "PATCH", pattern: "/admin/v1/models/{id}", summary: "Change a model's upstream, prices or enabled flag",
			access: operatorWrite, status: ok, body: updateModelRequest{}, resp: store.Model{}, handle: s.updateModel},
		{method: "DELETE", pattern: "/admin/v1/models/{id}", summary: "Remove a model and its access rules",
			access: operatorWrite, status: ok, resp: store.Model{}, handle: s.removeModel},
		{method: "GET", pattern: "/admin/v1/organizations/{id}/models", summary: "The catalog as an organization sees it: the shared models with its access rules, and its own",
			access: tenantRead, status: ok, resp: catalogList{}, handle: s.orgCatalog},
		{method: "POST", pattern: "/admin/v1/organizations/{id}/models/grant", summary: "Let an organization use a shared model (overrides BULKHEAD_MODEL_ACCESS_DEFAULT)",
			access: operatorWrite, status: ok, body: modelAccessRequest{}, resp: modelAccess{}, handle: s.grantModel},
		{method: "POST", pattern: "/admin/v1/organizations/{id}/models/revoke", summary: "Forbid an organization a shared model (overrides BULKHEAD_MODEL_ACCESS_DEFAULT)",
			access: operatorWrite, status: ok, body: modelAccessRequest{}, resp: modelAccess{}, handle: s.revokeModel},

		{method: "GET", pattern: "/admin/v1/organizations/{id}/budgets", summary: "An organization's dollar budgets: organization, key and end-user levels, each with its window and alert thresholds",
			access: tenantRead, status: ok, resp: budgetList{}, handle: s.listBudgets},
		{method: "PUT", pattern: "/admin/v1/organizations/{id}/budgets", summary: "Set the budget of one scope (the organization, a key, an end user, or a key's end user), replacing its previous one",
			access: operatorWrite, status: ok, body: setBudgetRequest{}, resp: store.Budget{}, handle: s.setBudget},
		{method: "POST", pattern: "/admin/v1/organizations/{id}/budgets/remove", summary: "Remove the budget of one scope",
			access: operatorWrite, status: ok, body: budgetScope{}, resp: store.Budget{}, handle: s.removeBudget},

		{method: "GET", pattern: "/admin/v1/usage", summary: "Usage of every organization, busiest first (operators)",
			access: operatorRead, status: ok, resp: orgUsageReport{}, handle: s.usageByOrg, query: []param{qSince, qUntil}},
		{method: "GET", pattern: "/admin/v1/organizations/{id}/usage", summary: "An organization's requests and tokens, grouped",
			access: tenantRead, status: ok, resp: usageReport{}, handle: s.orgUsage, query: []param{qSince, qUntil, qGroupBy}},
		{method: "GET", pattern: "/admin/v1/organizations/{id}/usage/series", summary: "An organization's usage per day and model, key or status, with errors and latency percentiles",
			access: tenantRead, status: ok, resp: seriesReport{}, handle: s.orgSeries,
			query: []param{qSince, qUntil, {"by", "string", "model, key or status (classes ok, 4xx, 5xx; each with the day's latency) (default model)"}}},
		{method: "GET", pattern: "/admin/v1/organizations/{id}/prompts", summary: "An organization's request log, newest first, paged and filtered",
			access: tenantRead, status: ok, resp: promptList{}, handle: s.listPrompts,
			query: []param{qSince, qUntil, {"model", "string", "only this model"}, {"key", "string", "only this key id"},
				{"status", "integer", "only this HTTP status"}, {"limit", "integer", "page size, 1 to 100 (default 20)"},
				{"cursor", "string", "next_cursor of the previous page"}}},
		{method: "GET", pattern: "/admin/v1/organizations/{id}/prompts/{prompt}", summary: "One request of an organization's log",
			access: tenantRead, status: ok, resp: store.Prompt{}, handle: s.getPrompt},
	}
}
