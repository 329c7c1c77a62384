package api

// HealthFactor is one factor of an integration's health score: whether it
// holds and why (never a secret).
type HealthFactor struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// IntegrationHealth is the answer of GET /v1/integrations/{id}/health and
// each fleet entry's "health": a score 0..100 (the sum of the weights of
// the factors that hold), flagged when below [lifecycle] score_threshold.
type IntegrationHealth struct {
	Score   int            `json:"score"`
	Flagged bool           `json:"flagged"`
	Factors []HealthFactor `json:"factors"`
}

// FleetIntegration is one integration of the fleet view: its metadata
// (never a token) and its health.
type FleetIntegration struct {
	Integration
	Health IntegrationHealth `json:"health"`
}

// FleetList is the answer of GET /v1/admin/integrations. Next, when not
// empty, is the "after" of the next page ("tenant/integration").
type FleetList struct {
	Integrations []FleetIntegration `json:"integrations"`
	Next         string             `json:"next"`
}

// Fleet view query parameters and page bounds.
const (
	FleetParamTenant   = "tenant_id"
	FleetParamProvider = "provider"
	FleetParamStatus   = "status"
	FleetParamFlagged  = "flagged"
	FleetParamLimit    = "limit"
	FleetParamAfter    = "after"
	FleetDefaultLimit  = 100
	FleetMaxLimit      = 1000
)
