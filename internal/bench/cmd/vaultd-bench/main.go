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
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

type options struct {
	binDir       string
	nginxBin     string
	out          string
	profileDir   string
	duration     time.Duration
	warmup       int
	storm        int
	stormLatency time.Duration
	fsyncN       int
	retentionN   int
	scaleSmall   string
	scaleLarge   string
	keep         bool
	postgres     bool
	pgDSN        string // admin DSN; never printed
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floorproxy" {
		os.Exit(floorProxyMain(os.Args[2:]))
	}
	var o options
	flag.StringVar(&o.binDir, "bin", "", "directory holding the built vaultd and vaultctl (required)")
	flag.StringVar(&o.nginxBin, "nginx", "nginx", "nginx binary")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write ('' for none)")
	flag.StringVar(&o.profileDir, "profile-dir", "", "where to save the CPU profile of vaultd under 16 HTTP/2 callers ('' for none)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured duration of each scenario")
	flag.IntVar(&o.warmup, "warmup", 300, "unmeasured requests per target before measuring")
	flag.IntVar(&o.storm, "storm", 1000, "concurrent callers in the expired-token storm")
	flag.DurationVar(&o.stormLatency, "storm-latency", 50*time.Millisecond, "how long the fake provider takes to answer the storm's refresh")
	flag.IntVar(&o.fsyncN, "fsync-n", 2000, "append+fdatasync iterations of the fdatasync floor (also bounded by -duration)")
	flag.IntVar(&o.retentionN, "retention-n", 100000, "audit events appended per retention round (0 skips)")
	flag.StringVar(&o.scaleSmall, "scale-small", "10/1000", "tenants/integrations of the small scale database")
	// Off by default: every tenant has a key object of its own in the HSM,
	// and SoftHSM's file store slows with each one, so 10,000 tenants
	// take far longer to generate than the rest of the run.
	flag.StringVar(&o.scaleLarge, "scale-large", "", "tenants/integrations of the large scale database, e.g. 10000/1000000 ('' skips the scale runs)")
	flag.BoolVar(&o.postgres, "postgres", true, "also measure vaultd on PostgreSQL, on the cluster -postgres-dsn names (skipped without one)")
	// The DSN may carry a password, so its default is read after parsing
	// rather than shown by -help.
	flag.StringVar(&o.pgDSN, "postgres-dsn", "", "postgres:// URL of a role that may create roles and databases (default $VAULTD_PG_DSN)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	flag.Parse()
	if o.pgDSN == "" {
		o.pgDSN = os.Getenv("VAULTD_PG_DSN")
	}
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
	Env          machine
	Duration     time.Duration
	Proxy        map[string]map[int]result // target -> callers -> result
	HSMBefore    float64
	HSMAfter     float64
	HSMWarmups   int
	Fsync        result // append + fdatasync on the database's filesystem
	Storm        stormResult
	StormFloor   result // the same burst through the minimal Go proxy (no refresh)
	StormLatency time.Duration
	Store        result
	RawBolt      result
	RawBolt1     result
	RecordSize   int
	Scale        []scalePoint
	Retention    retentionResult
	Profile      string // pprof -top output, if taken
	UpBad        int64
	PG           pgReport
}

type stormResult struct {
	Callers   int
	Refreshes int
	Errors    int
	FirstErr  string
	P50, P99  time.Duration
	Elapsed   time.Duration
}

// targets are measured in this order, at each caller count in turn.
var targets = []string{"direct", "nginx", "floor", "floor-write", "floor-fsync", "vaultd-h2", "vaultd-h3", "vaultd-h2-always"}

func benchmark(ctx context.Context, o options) (err error) {
	nginxPath, err := exec.LookPath(o.nginxBin)
	if err != nil {
		return fmt.Errorf("nginx: %w (scripts/bench.sh installs it)", err)
	}
	small, err := parseScale(o.scaleSmall)
	if err != nil {
		return err
	}
	var large [2]int
	if o.scaleLarge != "" {
		if large, err = parseScale(o.scaleLarge); err != nil {
			return err
		}
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
	rep := &report{Env: describeMachine(nginxPath, dir), Duration: o.duration, Proxy: map[string]map[int]result{}, StormLatency: o.stormLatency}

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

	appTLS, err := p.clientTLS("app")
	if err != nil {
		return err
	}
	opTLS, err := p.clientTLS("operator")
	if err != nil {
		return err
	}
	// Two vaultd, identical but for [audit] sync, each with its own SoftHSM
	// token and database in the same work directory (one filesystem).
	vs := map[string]*vaultd{}
	for _, mode := range []string{"batch", "always"} {
		vdir := filepath.Join(dir, "vaultd-"+mode)
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			return err
		}
		v, err := setupVaultd(vdir, o.binDir, p, up, mode)
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
		if err := seedVaultd(ctx, v, up, appTLS, opTLS); err != nil {
			return err
		}
		vs[mode] = v
	}
	v := vs["batch"]
	app, err := client.New(v.api, client.Options{TLSConfig: appTLS})
	if err != nil {
		return err
	}
	ng, err := startNginx(nginxPath, filepath.Join(dir, "nginx"), p, up, static)
	if err != nil {
		return err
	}
	defer ng.stop()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	floors := map[string]*floorProxy{}
	for t, mode := range map[string]string{"floor": "", "floor-write": "write", "floor-fsync": "fsync"} {
		f, err := startFloor(self, filepath.Join(dir, t), p, up, static, mode)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		defer f.stop()
		floors[t] = f
	}

	h2 := func() *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: appTLS.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
		}}
	}
	h3tr := &http3.Transport{TLSClientConfig: appTLS.Clone()}
	defer h3tr.Close()
	clients := map[string]*http.Client{"vaultd-h3": {Timeout: 30 * time.Second, Transport: h3tr}}
	for _, t := range targets {
		if clients[t] == nil {
			clients[t] = h2()
		}
	}
	const path = "/contacts/0031000000abcDE"
	reqs := map[string]newReq{
		"direct":           getReq(up.url("/api"+path), http.Header{"Authorization": {"Bearer " + static}}),
		"nginx":            getReq(ng.url("/api"+path), nil),
		"vaultd-h2":        getReq(v.api+"/v1/integrations/hot/proxy"+path, nil),
		"vaultd-h3":        getReq(v.api+"/v1/integrations/hot/proxy"+path, nil),
		"vaultd-h2-always": getReq(vs["always"].api+"/v1/integrations/hot/proxy"+path, nil),
	}
	for t, f := range floors {
		reqs[t] = getReq(f.url(path), nil)
	}
	for _, t := range targets {
		if err := warm(clients[t], reqs[t], o.warmup); err != nil {
			return fmt.Errorf("warm-up %s: %w", t, err)
		}
	}
	if rep.HSMBefore, err = v.hsmOps(ctx); err != nil {
		return err
	}
	fmt.Printf("%-16s %7s %9s %9s %10s %6s\n", "target", "callers", "p50", "p99", "req/s", "errors")
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
			fmt.Printf("%-16s %7d %9s %9s %10.0f %6d\n", t, callers, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.RPS, r.Errors)
			if r.Errors > 0 {
				return fmt.Errorf("%s at %d callers: %d errors, first: %s", t, callers, r.Errors, r.FirstEr)
			}
		}
	}
	if rep.HSMAfter, err = v.hsmOps(ctx); err != nil {
		return err
	}
	fmt.Printf("HSM operations during the measured proxy runs: %.0f\n", rep.HSMAfter-rep.HSMBefore)

	if rep.Fsync, err = fdatasyncFloor(filepath.Join(dir, "vaultd-batch"), o.fsyncN, o.duration); err != nil {
		return err
	}
	fmt.Printf("append 300 B + fdatasync: %d iterations, p50 %s p99 %s\n", rep.Fsync.N, rep.Fsync.P50.Round(time.Microsecond), rep.Fsync.P99.Round(time.Microsecond))

	if rep.Storm, err = storm(ctx, v, up, app, o.storm, o.stormLatency); err != nil {
		return err
	}
	fmt.Printf("storm: %d callers on an expired token, provider latency %s -> %d refresh(es), %d errors, p50 %s p99 %s\n",
		rep.Storm.Callers, o.stormLatency, rep.Storm.Refreshes, rep.Storm.Errors, rep.Storm.P50.Round(time.Microsecond), rep.Storm.P99.Round(time.Microsecond))
	floorReq := func(int) newReq { return getReq(floors["floor"].url(path), nil) }
	if rep.StormFloor, err = burst(appTLS, floorReq, floorReq, o.storm); err != nil {
		return err
	}
	fmt.Printf("burst of %d through the minimal Go proxy: p50 %s p99 %s, %d errors %s\n", o.storm,
		rep.StormFloor.P50.Round(time.Microsecond), rep.StormFloor.P99.Round(time.Microsecond), rep.StormFloor.Errors, rep.StormFloor.FirstEr)

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

	switch {
	case !o.postgres:
		rep.PG.Skipped = "skipped with `-postgres=false`"
	case o.pgDSN == "":
		rep.PG.Skipped = "no PostgreSQL: `VAULTD_PG_DSN` unset and no `-postgres-dsn` (scripts/bench.sh starts a cluster when Debian's postgresql is installed)"
	default:
		if rep.PG, err = pgBench(ctx, o, filepath.Join(dir, "vaultd-pg"), p, up, appTLS, opTLS); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
	}

	if o.scaleLarge != "" {
		sdir := filepath.Join(dir, "vaultd-scale")
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			return err
		}
		if rep.Scale, err = scale(ctx, o, sdir, p, up, h2(), [][2]int{small, large}); err != nil {
			return err
		}
	}
	if o.retentionN > 0 {
		if rep.Retention, err = retention(ctx, filepath.Join(dir, "retention.db"), o.retentionN); err != nil {
			return fmt.Errorf("retention: %w", err)
		}
		fmt.Printf("retention: %d events per round, file after each round's appends: %v\n", o.retentionN, rep.Retention.Sizes)
	}

	rep.Env.LoadEnd = loadAvg()
	fmt.Println()
	verdicts := rep.verdicts()
	for _, vd := range verdicts {
		fmt.Printf("%-4s %s: %s\n", vd.mark(), vd.Target, vd.Measured)
		if !vd.Met {
			fmt.Printf("     floor: %s\n", vd.Floor)
		}
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, rep.markdown(verdicts), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", o.out)
	}
	return nil
}

// seedVaultd creates tenant acme and stores the "hot" integration every
// proxied scenario calls.
func seedVaultd(ctx context.Context, v *vaultd, up *upstream, appTLS, opTLS *tls.Config) error {
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
	return nil
}

// parseScale parses "tenants/integrations" (-scale-small, -scale-large).
func parseScale(s string) ([2]int, error) {
	bad := fmt.Errorf("scale %q: want tenants/integrations, integrations >= tenants >= 1", s)
	ts, ns, ok := strings.Cut(s, "/")
	if !ok {
		return [2]int{}, bad
	}
	t, err1 := strconv.Atoi(ts)
	n, err2 := strconv.Atoi(ns)
	if err1 != nil || err2 != nil || t < 1 || n < t {
		return [2]int{}, bad
	}
	return [2]int{t, n}, nil
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
func storm(ctx context.Context, v *vaultd, up *upstream, app *client.Client, n int, latency time.Duration) (stormResult, error) {
	return stormOn(ctx, []string{v.api}, "storm", up, app, n, latency)
}

// stormOn is storm on integration id, its callers' clients spread over the
// nodes whose API addresses are apis (client i on apis[i%len(apis)]).
func stormOn(ctx context.Context, apis []string, id string, up *upstream, app *client.Client, n int, latency time.Duration) (stormResult, error) {
	tok := up.prov.IssueInitialToken([]string{"contacts.read"})
	var m map[string]any
	if err := json.Unmarshal(oauthtest.TokenResponseJSON(tok), &m); err != nil {
		return stormResult{}, err
	}
	m["expires_in"] = 1 // expires in 1s, well inside the 60s refresh margin
	js, _ := json.Marshal(m)
	if _, err := app.StoreToken(ctx, id, "example", js); err != nil {
		return stormResult{}, fmt.Errorf("storm: store token: %w", err)
	}
	// A provider answering slowly keeps the refresh in flight while the
	// callers pile up, the case the per-integration lock is for.
	up.prov.SetRefreshDelay(latency)
	defer up.prov.SetRefreshDelay(0)
	before := up.prov.RefreshCount()
	tc := app.HTTPClient().Transport.(*http.Transport).TLSClientConfig
	// The connection is warmed on another integration: any call on "storm"
	// would start its refresh.
	r, err := burst(tc, func(i int) newReq {
		return getReq(apis[i%len(apis)]+"/v1/integrations/hot/proxy/contacts/1", nil)
	}, func(i int) newReq {
		return getReq(apis[i%len(apis)]+"/v1/integrations/"+id+"/proxy/contacts/1", nil)
	}, n)
	if err != nil {
		return stormResult{}, err
	}
	return stormResult{Callers: n, Elapsed: r.Elapsed, Refreshes: up.prov.RefreshCount() - before,
		Errors: r.Errors, FirstErr: r.FirstEr, P50: r.P50, P99: r.P99}, nil
}

// burst sends n concurrent calls of mk at once and measures each from its
// send to its last byte. The callers come from n/100 fresh clients (app
// instances), 100 callers each on one HTTP/2 connection that one call of
// warmUp has set up: under every server's stream limit, so the burst
// measures the callers, not hundreds of handshakes a client would start
// for requests beyond the limit. warmUp and mk give client i's requests.
func burst(tc *tls.Config, warmUp, mk func(client int) newReq, n int) (result, error) {
	const perConn = 100
	cs := make([]*http.Client, (n+perConn-1)/perConn)
	for i := range cs {
		cs[i] = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tc.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
		defer cs[i].CloseIdleConnections()
		if err := once(cs[i], warmUp(i)); err != nil {
			return result{}, fmt.Errorf("burst warm-up: %w", err)
		}
	}
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
			errs[i] = once(cs[i/perConn], mk(i/perConn))
			lat[i] = time.Since(t0)
		}(i)
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	elapsed := time.Since(start)
	var ok []time.Duration
	var r result
	for i, e := range errs {
		if e != nil {
			if r.Errors == 0 {
				r.FirstEr = e.Error()
			}
			r.Errors++
			continue
		}
		ok = append(ok, lat[i])
	}
	errsN, first := r.Errors, r.FirstEr
	r = summarize(ok)
	r.Name, r.Callers, r.Elapsed, r.Errors, r.FirstEr = "burst", n, elapsed, errsN, first
	return r, nil
}

// storeTokens runs store_token from writers goroutines, each PUT to a new
// integration id.
func storeTokens(ctx context.Context, v *vaultd, c *http.Client, up *upstream, writers int, d time.Duration) result {
	return storeTokensOn(ctx, []string{v.api}, "st", c, up, writers, d)
}

// storeTokensOn is storeTokens with the PUTs spread over the nodes whose
// API addresses are apis, round robin, to ids prefix-NNNNNN.
func storeTokensOn(ctx context.Context, apis []string, prefix string, c *http.Client, up *upstream, writers int, d time.Duration) result {
	body, _ := json.Marshal(map[string]any{
		"provider": "example",
		"token":    json.RawMessage(oauthtest.TokenResponseJSON(up.prov.IssueInitialToken([]string{"contacts.read"}))),
	})
	var ctr atomic.Int64
	mk := func() (*http.Request, error) {
		n := ctr.Add(1)
		id := fmt.Sprintf("%s-%06d", prefix, n)
		req, err := http.NewRequest(http.MethodPut, apis[int(n)%len(apis)]+"/v1/integrations/"+id, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}
	// Warm each node's connection (and create st-000001, whose size is
	// measured).
	_ = warm(c, mk, len(apis))
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
