package storagetest

import (
	"fmt"
	"time"

	"github.com/vaultd/vaultd/storage"
)

// NewRevocation returns a pending revocation fixture for integrationID of
// tenantID, due at T0 (Revision 0: the store sets it).
func NewRevocation(id, tenantID, integrationID string) storage.Revocation {
	return storage.Revocation{
		ID:            id,
		TenantID:      tenantID,
		IntegrationID: integrationID,
		Provider:      "example",
		Hint:          storage.HintRefreshToken,
		Sealed:        Ciphertext("revocation/"+id, 96),
		KEKVersion:    1,
		CreatedAt:     T0,
		NextAttemptAt: T0.Add(30 * time.Second),
	}
}

// NewDelivery returns a pending delivery fixture due at next (Revision 0:
// the store sets it).
func NewDelivery(id string, next time.Time) storage.Delivery {
	return storage.Delivery{
		ID:            id,
		Webhook:       "0123456789ab",
		Type:          "integration.connected",
		TenantID:      "acme",
		Seq:           1,
		Body:          []byte(fmt.Sprintf(`{"type":"integration.connected","data":{"id":%q}}`, id)),
		Status:        storage.DeliveryPending,
		CreatedAt:     T0,
		NextAttemptAt: next,
		UpdatedAt:     T0,
	}
}
