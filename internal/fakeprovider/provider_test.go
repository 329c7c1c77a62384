package fakeprovider

import (
	"net/http"
	"testing"
)

// TestStartClose: a started provider answers until Close, and Close can be
// called twice.
func TestStartClose(t *testing.T) {
	p := Start(Config{})
	resp, err := p.Client().Get(p.APIBaseURL() + "/echo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated API call: %d", resp.StatusCode)
	}
	p.Close()
	p.Close()
	if _, err := p.Client().Get(p.URL() + "/token"); err == nil {
		t.Error("closed provider still answers")
	}
}
