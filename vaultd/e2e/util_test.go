package e2e

import "github.com/vaultd/vaultd/vaultd/client"

func clientAuditAll() client.AuditQuery { return client.AuditQuery{} }
