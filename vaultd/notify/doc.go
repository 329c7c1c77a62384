// Package notify sends webhook notifications (Standard Webhooks) about
// integration, tenant and key lifecycle changes.
//
// Notifications are derived from the audit trail, which is the outbox:
// every state change already commits with its audit event in one
// transaction. A Dispatcher tails the trail from a persisted cursor, maps
// each event to a notification type (Map), filters it per configured
// webhook (tenants, events patterns) and stores one delivery per webhook
// together with the new cursor in one transaction
// (storage.DeliveryStore.EnqueueDeliveries). A crash therefore loses no
// notification: events after the stored cursor are read again at the next
// start. Delivery is at least once.
//
// Deliveries are sent by a small worker pool (bounded concurrency, at
// most a few per webhook, a timeout per attempt), signed with the
// webhook's whsec_ key as Standard Webhooks prescribe, and retried on a
// non-2xx answer or a failure after the delays of the webhook's retry
// schedule. After the last retry fails the delivery is dead-lettered
// (status failed, audited as webhook.dead_letter) until an operator
// redelivers it. Nothing here runs on an API call's path: a slow or
// hanging receiver delays only its own deliveries.
package notify
