package api

import "time"

// The webhook deliveries' wire types (operator routes).

// Delivery statuses, the values of WebhookDelivery.Status and of the
// status filter of GET /v1/admin/webhooks/deliveries.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed" // dead-lettered after the last attempt
)

// Limits of GET /v1/admin/webhooks/deliveries.
const (
	DefaultDeliveryLimit = 100
	MaxDeliveryLimit     = 1000
)

// WebhookDelivery is one notification to one configured webhook. It never
// carries the body (nor, so, anything a receiver gets) or a secret; the
// webhook is named by its key, not its URL.
type WebhookDelivery struct {
	ID            string    `json:"id"` // the webhook-id header's value, stable across retries
	Webhook       string    `json:"webhook"`
	Type          string    `json:"type"`
	TenantID      string    `json:"tenant_id"`
	Status        string    `json:"status"`
	Attempts      uint32    `json:"attempts"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	LastError     string    `json:"last_error"` // a code: "http_503", "timeout", "connect_failed", ...
	CreatedAt     time.Time `json:"created_at"`
}

// WebhookDeliveryList answers GET /v1/admin/webhooks/deliveries, ordered
// by next attempt, then id.
type WebhookDeliveryList struct {
	Deliveries []WebhookDelivery `json:"deliveries"`
}
