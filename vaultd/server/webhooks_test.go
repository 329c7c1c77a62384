package server

import (
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
)

func TestParseDeliveryQuery(t *testing.T) {
	t.Parallel()
	status, limit, err := parseDeliveryQuery(url.Values{})
	if err != nil || status != "" || limit != api.DefaultDeliveryLimit {
		t.Fatalf("defaults: %q %d %v", status, limit, err)
	}
	v, _ := url.ParseQuery("status=failed&limit=1000")
	if status, limit, err = parseDeliveryQuery(v); err != nil || status != "failed" || limit != 1000 {
		t.Fatalf("full: %q %d %v", status, limit, err)
	}
	for _, bad := range []string{"status=gone", "status=", "limit=0", "limit=1001", "limit=x", "status=failed&status=pending", "webhook=abc", "secret=whsec_x"} {
		v, _ := url.ParseQuery(bad)
		_, _, err := parseDeliveryQuery(v)
		if err == nil {
			t.Errorf("%s accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "whsec") || strings.Contains(err.Error(), "gone") {
			t.Errorf("%s: error echoes the value: %v", bad, err)
		}
	}
}

var deliveryQueryErr = regexp.MustCompile(`^(status must be pending, delivered or failed|limit must be 1 to 1000|(status|limit|\(unknown\)) given [0-9]+ times|unknown parameter \(unknown\))$`)

func FuzzParseDeliveryQuery(f *testing.F) {
	for _, s := range []string{"", "status=pending&limit=5", "status=delivered", "limit=1&limit=2", "x=%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		status, limit, err := parseDeliveryQuery(v)
		if err != nil {
			// Only fixed messages: nothing of the query is echoed.
			if !deliveryQueryErr.MatchString(err.Error()) {
				t.Fatalf("error %q", err)
			}
			return
		}
		if limit < 1 || limit > api.MaxDeliveryLimit {
			t.Fatalf("limit %d", limit)
		}
		switch status {
		case "", api.DeliveryPending, api.DeliveryDelivered, api.DeliveryFailed:
		default:
			t.Fatalf("status %q", status)
		}
	})
}
