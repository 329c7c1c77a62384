// Package archtest checks the layering rule of docs/architecture.md on the
// real import graph: which package may import which, which third-party
// modules the bottom layers may use, that mains live under cmd/, and that
// only test kits link the testing package.
package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// layer is one row of the rule. The table below is docs/architecture.md's
// layer table as data: change both together.
type layer struct {
	name string
	// pkgs are import paths relative to the module; "dir/..." is dir and
	// every package under it.
	pkgs []string
	// may lists the layers whose packages this layer's packages may import.
	may []string
	// thirdParty, when not nil, is every module outside the standard
	// library these packages may import (an import path prefix each).
	thirdParty []string
	// testing: the layer may link the testing package.
	testing bool
}

// layers, top to bottom. A package belongs to the first layer that lists it.
var layers = []layer{
	{name: "cmd", pkgs: []string{"cmd/..."},
		may: []string{"wiring", "settings", "edge", "api", "service", "core", "logic", "adapters", "contracts", "platform", "config", "leaf", "fakes"}},
	// The benchmark harness drives SoftHSM and a fake provider the way the
	// tests do; it is never packaged.
	{name: "bench", pkgs: []string{"internal/bench/..."},
		may:     []string{"wiring", "settings", "edge", "api", "service", "core", "logic", "adapters", "contracts", "platform", "config", "leaf", "fakes", "testkit"},
		testing: true},
	{name: "wiring", pkgs: []string{"vaultd/daemon", "internal/ctl"},
		may: []string{"settings", "edge", "api", "service", "core", "logic", "adapters", "contracts", "platform", "config", "leaf"}},
	{name: "settings", pkgs: []string{"internal/settings"},
		may: []string{"logic", "platform", "config", "leaf"}},
	{name: "edge", pkgs: []string{"vaultd/server", "vaultd/client"},
		may: []string{"api", "service", "core", "logic", "contracts", "leaf"}},
	{name: "api", pkgs: []string{"vaultd/api"},
		may: []string{"logic", "contracts", "leaf"}},
	{name: "service", pkgs: []string{"vaultd/vault", "vaultd/notify"},
		may: []string{"core", "logic", "contracts", "leaf"}},
	{name: "core", pkgs: []string{"vaultd/envelope", "vaultd/audit"},
		may: []string{"contracts", "leaf"}},
	{name: "adapters", pkgs: []string{"storage/bolt", "storage/inmem", "storage/postgres", "hsm/pkcs11"},
		may: []string{"contracts", "leaf"}},
	{name: "logic", pkgs: []string{"policy", "vaultd/oauth", "vaultd/proxy", "vaultd/catalog"},
		may: []string{"leaf"}},
	{name: "contracts", pkgs: []string{"storage", "hsm"},
		may: []string{"leaf"}, thirdParty: []string{}},
	{name: "platform", pkgs: []string{"harden"},
		may: []string{"leaf"}, thirdParty: []string{"github.com/elastic/go-seccomp-bpf", "golang.org/x/net/bpf", "golang.org/x/sys"}},
	{name: "config", pkgs: []string{"vaultd/config"},
		may: []string{"leaf"}, thirdParty: []string{"github.com/pelletier/go-toml/v2"}},
	{name: "leaf", pkgs: []string{"internal/secret", "internal/ids", "internal/lockedmem", "internal/devpki"},
		may: []string{}, thirdParty: []string{"golang.org/x/sys"}},
	{name: "fakes", pkgs: []string{"internal/fakeprovider"},
		may: []string{"logic", "leaf"}},
	{name: "testkit", pkgs: []string{"hsm/hsmtest", "storage/storagetest", "vaultd/oauth/oauthtest", "internal/softhsmtest", "internal/ocktest", "internal/pgtest"},
		may: []string{"fakes", "logic", "contracts", "leaf"}, testing: true},
	{name: "tests", pkgs: []string{"vaultd/e2e", "internal/archtest"},
		may: []string{}, testing: true},
}

// mainDirs are where package main may live.
var mainDirs = []string{"cmd/", "internal/bench/cmd/"}

// knownCrossings are the imports that break the rule and are tolerated
// until they are removed; none today. An entry that no longer occurs fails
// the test: delete it.
var knownCrossings = []string{}

type pkg struct {
	ImportPath string
	Name       string
	Standard   bool
	Imports    []string
	Deps       []string
	Module     *struct{ Path string }
}

func TestLayers(t *testing.T) {
	mod, pkgs := load(t)
	seen := map[string]bool{}
	for _, v := range violations(t, mod, pkgs) {
		if slices.Contains(knownCrossings, v) {
			seen[v] = true
			t.Logf("known crossing (to remove): %s", v)
			continue
		}
		t.Errorf("layering: %s (see docs/architecture.md, Layers)", v)
	}
	for _, k := range knownCrossings {
		if !seen[k] {
			t.Errorf("known crossing %q no longer occurs: delete it from knownCrossings", k)
		}
	}
}

// TestTableIsConsistent: every layer named in a "may" list exists, and no
// package is listed twice.
func TestTableIsConsistent(t *testing.T) {
	names := map[string]bool{}
	for _, l := range layers {
		if names[l.name] {
			t.Errorf("layer %s listed twice", l.name)
		}
		names[l.name] = true
	}
	owner := map[string]string{}
	for _, l := range layers {
		for _, m := range l.may {
			if !names[m] {
				t.Errorf("layer %s may import unknown layer %s", l.name, m)
			}
		}
		for _, p := range l.pkgs {
			if o, dup := owner[p]; dup {
				t.Errorf("%s is in layers %s and %s", p, o, l.name)
			}
			owner[p] = l.name
		}
	}
}

// violations lists every edge against the rule, as "from -> to" with paths
// relative to the module.
func violations(t *testing.T, mod string, pkgs map[string]*pkg) []string {
	t.Helper()
	rel := func(p string) string {
		if p == mod {
			return "."
		}
		return strings.TrimPrefix(p, mod+"/")
	}
	inModule := func(p *pkg) bool { return p.Module != nil && p.Module.Path == mod }
	var out []string
	var paths []string
	for path, p := range pkgs {
		if inModule(p) {
			paths = append(paths, path)
		}
	}
	sort.Strings(paths)
	for _, path := range paths {
		p := pkgs[path]
		from := rel(path)
		l := layerOf(from)
		if l == nil {
			out = append(out, from+": in no layer (add it to the table here and in docs/architecture.md)")
			continue
		}
		if p.Name == "main" && !slices.ContainsFunc(mainDirs, func(d string) bool { return strings.HasPrefix(from, d) }) {
			out = append(out, from+": package main outside cmd/")
		}
		for _, imp := range p.Imports {
			q := pkgs[imp]
			switch {
			case q == nil:
				t.Fatalf("go list did not describe %s (imported by %s)", imp, path)
			case q.Standard:
				if imp == "testing" && !l.testing {
					out = append(out, from+" -> testing")
				}
				continue
			case inModule(q):
				to := rel(imp)
				tl := layerOf(to)
				if tl == nil {
					continue // reported as "in no layer"
				}
				if tl.name != l.name && !slices.Contains(l.may, tl.name) || tl.name == l.name && from != to {
					out = append(out, from+" -> "+to)
				}
			default:
				if l.thirdParty != nil && !slices.ContainsFunc(l.thirdParty, func(pre string) bool {
					return imp == pre || strings.HasPrefix(imp, pre+"/")
				}) {
					out = append(out, from+" -> "+imp)
				}
			}
			// A package that may not link testing must not reach it
			// through an import either. Name the edge into the package
			// that brings it (a test kit, or a third-party module); a
			// module package that links testing against the rule is
			// reported on its own.
			if !l.testing && slices.Contains(q.Deps, "testing") {
				if ql := layerOf(rel(imp)); !inModule(q) || ql != nil && ql.testing {
					out = append(out, from+" -> "+rel(imp)+" (links testing)")
				}
			}
		}
	}
	return out
}

func layerOf(rel string) *layer {
	for i := range layers {
		for _, p := range layers[i].pkgs {
			if p == rel {
				return &layers[i]
			}
			if dir, ok := strings.CutSuffix(p, "/..."); ok && (rel == dir || strings.HasPrefix(rel, dir+"/")) {
				return &layers[i]
			}
		}
	}
	return nil
}

// load runs `go list -deps -json ./...` in the module root: the build graph
// of every package, without test files (tests may import anything).
func load(t *testing.T) (string, map[string]*pkg) {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	mod, err := goCmd(root, "list", "-m")
	if err != nil {
		t.Fatal(err)
	}
	out, err := goCmd(root, "list", "-deps", "-json", "./...")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]*pkg{}
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	return strings.TrimSpace(mod), pkgs
}

func goCmd(dir string, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// TestDocMirrorsTable: the layer table of docs/architecture.md says what
// the table above says (packages, may import, third-party allowed).
func TestDocMirrorsTable(t *testing.T) {
	rows := docRows(t, "| layer | packages |")
	if len(rows) != len(layers) {
		t.Errorf("docs/architecture.md lists %d layers, the test %d", len(rows), len(layers))
	}
	for i, l := range layers {
		if i >= len(rows) {
			break
		}
		r := rows[i]
		if len(r) != 4 {
			t.Errorf("layer row %q: want 4 cells", r)
			continue
		}
		if r[0] != l.name {
			t.Errorf("doc row %d is layer %q, the test's is %q", i, r[0], l.name)
			continue
		}
		if got := codeSpans(r[1]); !slices.Equal(got, l.pkgs) {
			t.Errorf("layer %s: doc packages %q, test %q", l.name, got, l.pkgs)
		}
		may := []string{}
		if r[2] != "nothing" {
			may = strings.Split(r[2], ", ")
		}
		if !slices.Equal(may, l.may) {
			t.Errorf("layer %s: doc may import %q, test %q", l.name, may, l.may)
		}
		var third []string
		switch r[3] {
		case "any":
		case "none":
			third = []string{}
		default:
			third = codeSpans(r[3])
		}
		if (third == nil) != (l.thirdParty == nil) || !slices.Equal(third, l.thirdParty) {
			t.Errorf("layer %s: doc third-party %q, test %q", l.name, r[3], l.thirdParty)
		}
	}
}

// TestDocListsEveryPackage: the package table of docs/architecture.md has
// a row for every package, in the package's layer.
func TestDocListsEveryPackage(t *testing.T) {
	mod, pkgs := load(t)
	listed := map[string]string{}
	for _, r := range docRows(t, "| package | layer | owns |") {
		for _, p := range codeSpans(r[0]) {
			listed[p] = r[1]
		}
	}
	for path, p := range pkgs {
		if p.Module == nil || p.Module.Path != mod {
			continue
		}
		rel := strings.TrimPrefix(path, mod+"/")
		l := layerOf(rel)
		switch got, ok := listed[rel]; {
		case !ok:
			t.Errorf("docs/architecture.md, Packages: no row for %s", rel)
		case l != nil && got != l.name:
			t.Errorf("docs/architecture.md, Packages: %s is in layer %s, the rule says %s", rel, got, l.name)
		}
	}
}

// docRows returns the cells of the markdown table whose header line starts
// with header, without the header and separator lines.
func docRows(t *testing.T, header string) [][]string {
	t.Helper()
	root, err := goCmd(".", "env", "GOMOD")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(filepath.Dir(strings.TrimSpace(root)), "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	in := false
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, header):
			in = true
		case in && strings.HasPrefix(line, "|---"):
		case in && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			rows = append(rows, cells)
		case in:
			return rows
		}
	}
	if !in {
		t.Fatalf("docs/architecture.md has no table starting %q", header)
	}
	return rows
}

// codeSpans returns the `...` spans of a cell.
func codeSpans(cell string) []string {
	var out []string
	for i, part := range strings.Split(cell, "`") {
		if i%2 == 1 {
			out = append(out, part)
		}
	}
	return out
}
