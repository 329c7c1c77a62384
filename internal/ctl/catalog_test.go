package ctl

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/vaultd/catalog"
)

func TestProvidersCatalog(t *testing.T) {
	var out bytes.Buffer
	if err := Run(t.Context(), []string{"providers", "catalog"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "TOKEN HOST") {
		t.Errorf("header %q", lines[0])
	}
	rows := map[string]string{}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = l
		}
	}
	for _, tp := range catalog.All() {
		row, ok := rows[tp.Name]
		if !ok {
			t.Errorf("%s not listed", tp.Name)
			continue
		}
		if !strings.Contains(row, tp.Docs[0]) || !strings.Contains(row, tp.Grant) {
			t.Errorf("%s row %q lacks its docs URL or grant", tp.Name, row)
		}
	}
	if z := rows["zendesk"]; !strings.Contains(z, "subdomain") || !strings.Contains(z, "{subdomain}.zendesk.com") {
		t.Errorf("zendesk row %q", z)
	}
	if s := rows["salesforce"]; !strings.Contains(s, "login.salesforce.com") {
		t.Errorf("salesforce row %q", s)
	}

	out.Reset()
	if err := Run(t.Context(), []string{"providers", "catalog", "-json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Version   int                `json:"version"`
		Providers []catalog.Template `json:"providers"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != catalog.Version() || len(got.Providers) != len(catalog.All()) {
		t.Fatalf("json: version %d, %d providers", got.Version, len(got.Providers))
	}
	ms := got.Providers[0]
	for _, p := range got.Providers {
		if p.Name == "microsoft" {
			ms = p
		}
	}
	if ms.Name != "microsoft" || len(ms.Params) != 1 || ms.Params[0].Name != "tenant" || ms.Params[0].Pattern == "" ||
		!strings.Contains(ms.TokenURL, "{tenant}") {
		t.Errorf("microsoft in json: %+v", ms)
	}

	if err := Run(t.Context(), []string{"providers", "catalog", "extra"}, io.Discard, io.Discard); err == nil {
		t.Error("an extra argument was accepted")
	}
}
