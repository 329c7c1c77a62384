// Command vaultd-bench measures vaultd against a direct call and against
// nginx as the cheapest possible mTLS reverse proxy, all in one run on one
// machine, and writes docs/benchmarks.md. scripts/bench.sh installs what it
// needs, builds the binaries and runs it; it is not part of the test suite.
//
// Everything listens on 127.0.0.1 only. Every loop is bounded by a request
// count and a duration.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

type options struct {
	binDir     string
	nginxBin   string
	out        string
	profileDir string
	duration   time.Duration
	warmup     int
	storm      int
	keep       bool
}

func main() {
	var o options
	flag.StringVar(&o.binDir, "bin", "", "directory holding the built vaultd and vaultctl (required)")
	flag.StringVar(&o.nginxBin, "nginx", "nginx", "nginx binary")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write ('' for none)")
	flag.StringVar(&o.profileDir, "profile-dir", "", "where to save the CPU profile of vaultd under 16 HTTP/2 callers ('' for none)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured duration of each scenario")
	flag.IntVar(&o.warmup, "warmup", 300, "unmeasured requests per target before measuring")
	flag.IntVar(&o.storm, "storm", 1000, "concurrent callers in the expired-token storm")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	flag.Parse()
	if o.binDir == "" {
		fmt.Fprintln(os.Stderr, "vaultd-bench: -bin is required")
		os.Exit(2)
	}
	if err := benchmark(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "vaultd-bench:", err)
		os.Exit(1)
	}
}

// report is everything the run measured.
type report struct {
	Env        machine
	Duration   time.Duration
	Proxy      map[string]map[int]result // target -> callers -> result
	HSMBefore  float64
	HSMAfter   float64
	HSMWarmups int
	Storm      stormResult
	Store      result
	RawBolt    result
	RawBolt1   result
	RecordSize int
	Profile    string // pprof -top output, if taken
	UpBad      int64
}

type stormResult struct {
	Callers   int
	Refreshes int
	Errors    int
	FirstErr  string
	P50, P99  time.Duration
	Elapsed   time.Duration
}

var targets = []string{"direct", "nginx", "vaultd-h2", "vaultd-h3"}

func benchmark(ctx context.Context, o options) (err error) {
	nginxPath, err := exec.LookPath(o.nginxBin)
	if err != nil {
		return fmt.Errorf("nginx: %w (scripts/bench.sh installs it)", err)
	}
	dir, err := os.MkdirTemp("", "vaultd-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	rep := &report{Env: describeMachine(nginxPath, dir), Duration: o.duration, Proxy: map[string]map[int]result{}}

	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return err
	}
	p, err := newPKI(pkiDir)
	if err != nil {
		return err
	}
	up, err := newUpstream(p)
	if err != nil {
		return err
	}
	defer up.srv.Close()
	static := up.prov.IssueInitialToken([]string{"contacts.read"}).AccessToken.Reveal()

	vdir := filepath.Join(dir, "vaultd")
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return err
	}
	v, err := setupVaultd(vdir, o.binDir, p, up)
	if err != nil {
		return err
	}
	if err := v.start(); err != nil {
		return err
	}
	defer func() {
		v.stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "vaultd log:", filepath.Join(vdir, "vaultd.log"), "(kept with -keep)")
		}
	}()
	ng, err := startNginx(nginxPath, filepath.Join(dir, "nginx"), p, up, static)
	if err != nil {
		return err
	}
	defer ng.stop()

	appTLS, err := p.clientTLS("app")
	if err != nil {
		return err
	}
	opTLS, err := p.clientTLS("operator")
	if err != nil {
		return err
	}
	op, err := client.New(v.api, client.Options{TLSConfig: opTLS})
	if err != nil {
		return err
	}
	app, err := client.New(v.api, client.Options{TLSConfig: appTLS})
	if err != nil {
		return err
	}
	if _, err := op.CreateTenant(ctx, "acme"); err != nil {
		return fmt.Errorf("create tenant: %w", err)
	}
	hot := up.prov.IssueInitialToken([]string{"contacts.read"})
	if _, err := app.StoreToken(ctx, "hot", "example", oauthtest.TokenResponseJSON(hot)); err != nil {
		return fmt.Errorf("store token: %w", err)
	}

	h2 := func() *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: appTLS.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
		}}
	}
	h3tr := &http3.Transport{TLSClientConfig: appTLS.Clone()}
	defer h3tr.Close()
	clients := map[string]*http.Client{
		"direct": h2(), "nginx": h2(), "vaultd-h2": h2(),
		"vaultd-h3": {Timeout: 30 * time.Second, Transport: h3tr},
	}
	const path = "/contacts/0031000000abcDE"
	reqs := map[string]newReq{
		"direct":    getReq(up.url("/api"+path), http.Header{"Authorization": {"Bearer " + static}}),
		"nginx":     getReq(ng.url("/api"+path), nil),
		"vaultd-h2": getReq(v.api+"/v1/integrations/hot/proxy"+path, nil),
		"vaultd-h3": getReq(v.api+"/v1/integrations/hot/proxy"+path, nil),
	}
	for _, t := range targets {
		if err := warm(clients[t], reqs[t], o.warmup); err != nil {
			return fmt.Errorf("warm-up %s: %w", t, err)
		}
	}
	if rep.HSMBefore, err = v.hsmOps(ctx); err != nil {
		return err
	}
	fmt.Printf("%-12s %7s %9s %9s %10s %6s\n", "target", "callers", "p50", "p99", "req/s", "errors")
	for _, callers := range []int{1, 16} {
		for _, t := range targets {
			var prof sync.WaitGroup
			if t == "vaultd-h2" && callers == 1 && o.profileDir != "" {
				// An execution trace shows where a lone request waits
				// (fsync, network, locks), which a CPU profile cannot.
				prof.Add(1)
				go func() {
					defer prof.Done()
					if b, err := httpGet(ctx, v.ops+"/debug/pprof/trace?seconds=1"); err == nil {
						_ = os.WriteFile(filepath.Join(o.profileDir, "vaultd-h2-1.trace"), []byte(b), 0o644)
					}
				}()
			}
			if t == "vaultd-h2" && callers == 16 && o.profileDir != "" {
				prof.Add(1)
				go func() {
					defer prof.Done()
					rep.Profile = takeProfile(ctx, v, o, max(1, int(o.duration.Seconds())-1))
				}()
			}
			r := run(ctx, t, clients[t], reqs[t], callers, o.duration, 200000)
			prof.Wait()
			if rep.Proxy[t] == nil {
				rep.Proxy[t] = map[int]result{}
			}
			rep.Proxy[t][callers] = r
			fmt.Printf("%-12s %7d %9s %9s %10.0f %6d\n", t, callers, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.RPS, r.Errors)
			if r.Errors > 0 {
				return fmt.Errorf("%s at %d callers: %d errors, first: %s", t, callers, r.Errors, r.FirstEr)
			}
		}
	}
	if rep.HSMAfter, err = v.hsmOps(ctx); err != nil {
		return err
	}
	fmt.Printf("HSM operations during the measured proxy runs: %.0f\n", rep.HSMAfter-rep.HSMBefore)

	if rep.Storm, err = storm(ctx, v, up, app, o.storm); err != nil {
		return err
	}
	fmt.Printf("storm: %d callers on an expired token -> %d refresh(es), %d errors, p50 %s p99 %s\n",
		rep.Storm.Callers, rep.Storm.Refreshes, rep.Storm.Errors, rep.Storm.P50.Round(time.Microsecond), rep.Storm.P99.Round(time.Microsecond))

	rep.Store = storeTokens(ctx, v, h2(), up, 16, o.duration)
	fmt.Printf("store_token 16 writers: %.0f req/s p50 %s p99 %s errors %d\n", rep.Store.RPS, rep.Store.P50.Round(time.Microsecond), rep.Store.P99.Round(time.Microsecond), rep.Store.Errors)
	if rep.Store.Errors > 0 {
		return fmt.Errorf("store_token: %d errors, first: %s", rep.Store.Errors, rep.Store.FirstEr)
	}
	rep.UpBad = up.bad.Load()

	v.stop() // releases the bbolt file lock
	if rep.RecordSize, err = integrationRecordSize(v.db, "acme", "st-000001"); err != nil {
		return fmt.Errorf("record size: %w", err)
	}
	if rep.RawBolt, err = rawBolt(filepath.Join(dir, "raw16.db"), 16, rep.RecordSize, o.duration, 100000); err != nil {
		return fmt.Errorf("raw bbolt: %w", err)
	}
	if rep.RawBolt1, err = rawBolt(filepath.Join(dir, "raw1.db"), 1, rep.RecordSize, o.duration, 100000); err != nil {
		return fmt.Errorf("raw bbolt: %w", err)
	}
	fmt.Printf("raw bbolt (%d-byte records): 16 writers %.0f puts/s, 1 writer %.0f puts/s (p50 %s)\n",
		rep.RecordSize, rep.RawBolt.RPS, rep.RawBolt1.RPS, rep.RawBolt1.P50.Round(time.Microsecond))

	fmt.Println()
	verdicts := rep.verdicts()
	for _, vd := range verdicts {
		fmt.Printf("%-4s %s: %s\n", vd.mark(), vd.Target, vd.Measured)
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, rep.markdown(verdicts), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", o.out)
	}
	return nil
}

// takeProfile fetches a CPU profile from vaultd's ops listener and returns
// pprof's top listing (or why there is none).
func takeProfile(ctx context.Context, v *vaultd, o options, seconds int) string {
	if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
		return "profile: " + err.Error()
	}
	body, err := httpGet(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", v.ops, seconds))
	if err != nil {
		return "profile: " + err.Error()
	}
	pf := filepath.Join(o.profileDir, "vaultd-h2-16.cpu.pprof")
	if err := os.WriteFile(pf, []byte(body), 0o644); err != nil {
		return "profile: " + err.Error()
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", v.bin, pf).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("profile saved to %s; go tool pprof failed: %v", pf, err)
	}
	return string(out)
}

// storm stores a token that is already inside the refresh margin and sends
// n concurrent proxied calls at once: the provider must see one refresh.
func storm(ctx context.Context, v *vaultd, up *upstream, app *client.Client, n int) (stormResult, error) {
	tok := up.prov.IssueInitialToken([]string{"contacts.read"})
	var m map[string]any
	if err := json.Unmarshal(oauthtest.TokenResponseJSON(tok), &m); err != nil {
		return stormResult{}, err
	}
	m["expires_in"] = 1 // expires in 1s, well inside the 60s refresh margin
	js, _ := json.Marshal(m)
	if _, err := app.StoreToken(ctx, "storm", "example", js); err != nil {
		return stormResult{}, fmt.Errorf("storm: store token: %w", err)
	}
	// A provider answering in 50ms keeps the refresh in flight while the
	// callers pile up, the case the per-integration lock is for.
	up.prov.SetRefreshDelay(50 * time.Millisecond)
	defer up.prov.SetRefreshDelay(0)
	before := up.prov.RefreshCount()
	tc := app.HTTPClient().Transport.(*http.Transport).TLSClientConfig.Clone()
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
	mk := getReq(v.api+"/v1/integrations/storm/proxy/contacts/1", nil)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-gate
			t0 := time.Now()
			errs[i] = once(c, mk)
			lat[i] = time.Since(t0)
		}(i)
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	sr := stormResult{Callers: n, Elapsed: time.Since(start), Refreshes: up.prov.RefreshCount() - before}
	var ok []time.Duration
	for i, e := range errs {
		if e != nil {
			if sr.Errors == 0 {
				sr.FirstErr = e.Error()
			}
			sr.Errors++
			continue
		}
		ok = append(ok, lat[i])
	}
	if len(ok) > 0 {
		r := summarize(ok)
		sr.P50, sr.P99 = r.P50, r.P99
	}
	return sr, nil
}

// storeTokens runs store_token from writers goroutines, each PUT to a new
// integration id.
func storeTokens(ctx context.Context, v *vaultd, c *http.Client, up *upstream, writers int, d time.Duration) result {
	body, _ := json.Marshal(map[string]any{
		"provider": "example",
		"token":    json.RawMessage(oauthtest.TokenResponseJSON(up.prov.IssueInitialToken([]string{"contacts.read"}))),
	})
	var ctr atomic.Int64
	mk := func() (*http.Request, error) {
		id := fmt.Sprintf("st-%06d", ctr.Add(1))
		req, err := http.NewRequest(http.MethodPut, v.api+"/v1/integrations/"+id, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}
	// Warm the connection (and create st-000001, whose size is measured).
	_ = warm(c, mk, 1)
	r := run(ctx, "store_token", c, mk, writers, d, 100000)
	return r
}

func summarize(l []time.Duration) result {
	s := append([]time.Duration(nil), l...)
	slices.Sort(s)
	r := result{N: len(s)}
	if r.N > 0 {
		r.P50, r.P99 = s[r.N/2], s[min(r.N-1, r.N*99/100)]
	}
	return r
}
