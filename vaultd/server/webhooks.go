package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/vaultd/api"
	"github.com/vaultd/vaultd/vaultd/audit"
	"github.com/vaultd/vaultd/vaultd/notify"
)

// The operator's webhook routes: the deliveries (dead letters among them)
// and redelivering one.

// Webhooks is what the webhook routes use (*notify.Dispatcher).
type Webhooks interface {
	Deliveries(ctx context.Context, status string, limit int) ([]storage.Delivery, error)
	Redeliver(ctx context.Context, ev audit.Event, id string) (storage.Delivery, error)
}

const (
	msgDeliveryNotFound = "delivery not found"
	msgNoWebhooks       = "webhook deliveries unavailable"
)

func viewDelivery(d storage.Delivery) api.WebhookDelivery {
	return api.WebhookDelivery{
		ID: d.ID, Webhook: d.Webhook, Type: d.Type, TenantID: d.TenantID, Status: d.Status, Attempts: d.Attempts,
		NextAttemptAt: d.NextAttemptAt.UTC(), LastError: d.LastError, CreatedAt: d.CreatedAt.UTC(),
	}
}

// listDeliveries serves GET /v1/admin/webhooks/deliveries?status=&limit=.
func (s *Server) listDeliveries(q *request) {
	if s.webhooks == nil {
		writeError(q.w, q.r, api.CodeIntegrationUnavailable, msgNoWebhooks)
		return
	}
	status, limit, err := parseDeliveryQuery(q.r.URL.Query())
	if err != nil {
		writeError(q.w, q.r, api.CodeBadRequest, "invalid deliveries query: "+err.Error())
		return
	}
	ds, err := s.webhooks.Deliveries(q.r.Context(), status, limit)
	if err != nil {
		s.log.ErrorContext(q.r.Context(), "list webhook deliveries", "request_id", requestID(q.r.Context()), "err", err)
		writeError(q.w, q.r, api.CodeIntegrationUnavailable, msgUnavailable)
		return
	}
	out := api.WebhookDeliveryList{Deliveries: make([]api.WebhookDelivery, 0, len(ds))}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, viewDelivery(d))
	}
	writeJSON(q.w, q.status, out)
}

// parseDeliveryQuery reads status (pending, delivered, failed or absent)
// and limit (1..MaxDeliveryLimit, default DefaultDeliveryLimit). Its
// errors name the parameter, never echo a value.
func parseDeliveryQuery(v url.Values) (status string, limit int, err error) {
	limit = api.DefaultDeliveryLimit
	for k, vals := range v {
		if len(vals) != 1 {
			return "", 0, fmt.Errorf("%s given %d times", paramName(k), len(vals))
		}
		switch k {
		case "status":
			status = vals[0]
			if status != api.DeliveryPending && status != api.DeliveryDelivered && status != api.DeliveryFailed {
				return "", 0, errors.New("status must be pending, delivered or failed")
			}
		case "limit":
			n, err := strconv.Atoi(vals[0])
			if err != nil || n < 1 || n > api.MaxDeliveryLimit {
				return "", 0, fmt.Errorf("limit must be 1 to %d", api.MaxDeliveryLimit)
			}
			limit = n
		default:
			return "", 0, fmt.Errorf("unknown parameter %s", paramName(k))
		}
	}
	return status, limit, nil
}

// paramName is a query key fit to quote in an answer: known ones as
// they are, anything else not at all.
func paramName(k string) string {
	if k == "status" || k == "limit" {
		return k
	}
	return "(unknown)"
}

// redeliver serves POST /v1/admin/webhooks/deliveries/{id}/redeliver: the
// delivery is pending again, due now, with its attempts reset and its
// webhook-id kept; the change commits with its webhook.redeliver event.
func (s *Server) redeliver(q *request) {
	w, r := q.w, q.r
	if s.webhooks == nil {
		writeError(w, r, api.CodeIntegrationUnavailable, msgNoWebhooks)
		return
	}
	ev := q.event(audit.ActionWebhookRedeliver, "", "", "")
	ev.RequestID, ev.HTTPStatus = requestID(r.Context()), q.status
	d, err := s.webhooks.Redeliver(r.Context(), ev, q.id)
	switch {
	case errors.Is(err, notify.ErrNotFound):
		writeError(w, r, api.CodeNotFound, msgDeliveryNotFound)
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "redeliver a webhook delivery", "request_id", ev.RequestID, "err", err)
		ev.Outcome, ev.HTTPStatus, ev.Detail = audit.OutcomeFailure, api.CodeIntegrationUnavailable.Status(), "delivery="+q.id+" unavailable"
		_ = s.record(r.Context(), ev)
		writeError(w, r, api.CodeIntegrationUnavailable, msgUnavailable)
		return
	}
	writeJSON(w, q.status, viewDelivery(d))
}
