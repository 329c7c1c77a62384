package e2e

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The shipped monitoring files (packaging/prometheus): the alert rules
// pass `promtool check rules`, the dashboard is valid JSON, and every
// metric either uses is one vaultd registers (a name in its non-test Go
// sources).

const promtoolEnv = "VAULTD_REQUIRE_PROMTOOL"

func monitoringFile(t *testing.T, name string) string {
	t.Helper()
	root, err := repoRoot()
	must(t, err)
	return filepath.Join(root, "packaging", "prometheus", name)
}

func TestAlertRulesPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv(promtoolEnv) != "" {
			t.Fatalf("promtool not found and %s is set (scripts/deps.sh installs it)", promtoolEnv)
		}
		t.Skip("promtool not installed")
	}
	out, err := exec.Command(promtool, "check", "rules", monitoringFile(t, "vaultd-alerts.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// metricRE finds vaultd metric names in PromQL.
var metricRE = regexp.MustCompile(`\bvaultd_[a-z0-9_]+\b`)

// registeredMetrics are the vaultd_* names in the repository's non-test
// Go sources.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	root, err := repoRoot()
	must(t, err)
	names := map[string]bool{}
	lit := regexp.MustCompile(`"(vaultd_[a-z0-9_]+)"`)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "dist") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	must(t, err)
	return names
}

// known says whether a name in a query is a registered metric, a
// histogram's series included.
func known(reg map[string]bool, name string) bool {
	if reg[name] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && reg[base] {
			return true
		}
	}
	return false
}

func TestMonitoringUsesRegisteredMetrics(t *testing.T) {
	t.Parallel()
	reg := registeredMetrics(t)
	if !reg["vaultd_hsm_up"] || !reg["vaultd_token_refresh_total"] {
		t.Fatalf("metric scan found too little: %d names", len(reg))
	}
	rules, err := os.ReadFile(monitoringFile(t, "vaultd-alerts.yml"))
	must(t, err)
	dash, err := os.ReadFile(monitoringFile(t, "vaultd-dashboard.json"))
	must(t, err)
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without title, uid or panels")
	}
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Fatalf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	exprs = append(exprs, string(rules))
	used := 0
	for _, e := range exprs {
		for _, name := range metricRE.FindAllString(e, -1) {
			used++
			if !known(reg, name) {
				t.Errorf("%s is used by the monitoring files but vaultd registers no such metric", name)
			}
		}
	}
	if used == 0 {
		t.Fatal("no metric found in the monitoring files")
	}
}
