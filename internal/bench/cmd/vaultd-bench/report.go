package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// analysis is the hand-written part of the report: what the profile showed
// and what was changed. It is kept next to the driver so the generated
// report always carries it.
//
//go:embed analysis.md
var analysis string

type machine struct {
	CPUs    int
	Model   string
	Kernel  string
	Go      string
	Nginx   string
	Date    string
	FS      string
	Command string
	// LoadStart and LoadEnd are /proc/loadavg's three figures: the machine
	// is shared, and the reader should know how busy it was.
	LoadStart, LoadEnd string
}

func describeMachine(nginxPath, dir string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Command: "scripts/bench.sh", LoadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command(nginxPath, "-v").CombinedOutput(); err == nil {
		m.Nginx = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version:"))
	}
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) == nil {
		m.FS = fsName(st.Type)
	}
	return m
}

func fsName(t int64) string {
	switch t {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("fs type 0x%x", t)
}

type verdict struct {
	Target   string
	Required string
	Met      bool
	Measured string
	Floor    string // for a target not met: the floor measured in the same run
}

func (v verdict) mark() string {
	if v.Met {
		return "MET"
	}
	return "NOT"
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// verdicts are the targets of the audit/hot-path work, each with what this
// run measured and, when missed, the floor measured in the same run.
func (r *report) verdicts() []verdict {
	n1, n16 := r.Proxy["nginx"][1], r.Proxy["nginx"][16]
	f1, f16 := r.Proxy["floor"][1], r.Proxy["floor"][16]
	fw1, fw16 := r.Proxy["floor-write"][1], r.Proxy["floor-write"][16]
	fs1, fs16 := r.Proxy["floor-fsync"][1], r.Proxy["floor-fsync"][16]
	b1, b16 := r.Proxy["vaultd-h2"][1], r.Proxy["vaultd-h2"][16]
	a1, a16 := r.Proxy["vaultd-h2-always"][1], r.Proxy["vaultd-h2-always"][16]
	var vs []verdict

	v := verdict{Target: "`sync = \"batch\"` p50, 1 caller", Required: "≤ 1.3× nginx p50",
		Met:      float64(b1.P50) <= 1.3*float64(n1.P50),
		Measured: fmt.Sprintf("%s vs nginx %s (%.2f×)", us(b1.P50), us(n1.P50), ratio(b1.P50, n1.P50))}
	v.Floor = fmt.Sprintf("minimal Go mTLS proxy %s = %.2f× nginx; + one write(2) %s = %.2f× nginx; vaultd is %.2f× the minimal proxy, %.2f× the one with the write",
		us(f1.P50), ratio(f1.P50, n1.P50), us(fw1.P50), ratio(fw1.P50, n1.P50), ratio(b1.P50, f1.P50), ratio(b1.P50, fw1.P50))
	vs = append(vs, v)

	v = verdict{Target: "`sync = \"batch\"` req/s, 16 callers", Required: "≥ 0.5× nginx",
		Met:      b16.RPS >= 0.5*n16.RPS,
		Measured: fmt.Sprintf("%.0f vs nginx %.0f (%.2f×)", b16.RPS, n16.RPS, b16.RPS/n16.RPS)}
	v.Floor = fmt.Sprintf("minimal Go mTLS proxy %.0f = %.2f× nginx; + one write(2) %.0f = %.2f× nginx; vaultd is %.2f× the minimal proxy, %.2f× the one with the write",
		f16.RPS, f16.RPS/n16.RPS, fw16.RPS, fw16.RPS/n16.RPS, b16.RPS/f16.RPS, b16.RPS/fw16.RPS)
	vs = append(vs, v)

	v = verdict{Target: "`sync = \"always\"` req/s, 16 callers", Required: "≥ 0.35× nginx",
		Met:      a16.RPS >= 0.35*n16.RPS,
		Measured: fmt.Sprintf("%.0f vs nginx %.0f (%.2f×)", a16.RPS, n16.RPS, a16.RPS/n16.RPS)}
	v.Floor = fmt.Sprintf("minimal Go mTLS proxy %.0f = %.2f× nginx; + write + fdatasync per request (no group commit) %.0f = %.2f× nginx; vaultd is %.2f× the minimal proxy, %.2f× the fdatasync one",
		f16.RPS, f16.RPS/n16.RPS, fs16.RPS, fs16.RPS/n16.RPS, a16.RPS/f16.RPS, a16.RPS/fs16.RPS)
	vs = append(vs, v)

	limit := n1.P50 + r.Fsync.P50
	v = verdict{Target: "`sync = \"always\"` p50, 1 caller", Required: "≤ nginx p50 + one fdatasync",
		Met: a1.P50 <= limit,
		Measured: fmt.Sprintf("%s vs nginx %s + fdatasync p50 %s = %s (%.2f× that)", us(a1.P50), us(n1.P50), us(r.Fsync.P50),
			us(limit), ratio(a1.P50, limit))}
	v.Floor = fmt.Sprintf("minimal Go mTLS proxy + write + fdatasync %s = %.2f× the limit; vaultd is %.2f× that floor (%s above it)",
		us(fs1.P50), ratio(fs1.P50, limit), ratio(a1.P50, fs1.P50), us(a1.P50-fs1.P50))
	vs = append(vs, v)

	st := r.Storm
	limit = r.StormLatency + 100*time.Millisecond
	v = verdict{Target: fmt.Sprintf("refresh storm, %d callers", st.Callers), Required: "exactly 1 refresh; p99 ≤ provider latency + 100 ms",
		Met: st.Refreshes == 1 && st.Errors == 0 && st.P99 <= limit,
		Measured: fmt.Sprintf("%d refresh(es), %d errors; provider latency %s, p50 %s, p99 %s (limit %s)", st.Refreshes, st.Errors,
			ms(r.StormLatency), ms(st.P50), ms(st.P99), ms(limit))}
	v.Floor = fmt.Sprintf("the same burst of %d through the minimal Go proxy (no refresh): p99 %s, so floor %s + latency = %s; vaultd p99 is %.2f× that",
		r.StormFloor.Callers, ms(r.StormFloor.P99), ms(r.StormFloor.P99), ms(r.StormFloor.P99+r.StormLatency),
		ratio(st.P99, r.StormFloor.P99+r.StormLatency))
	vs = append(vs, v)

	if len(r.Scale) == 2 {
		s0, s1 := r.Scale[0], r.Scale[1]
		lbl := fmt.Sprintf("%s integrations in %s tenants", count(s1.Integrations), count(s1.Tenants))
		vs = append(vs,
			verdict{Target: lbl + ": proxied call p50", Required: fmt.Sprintf("≤ 1.3× the same at %s", count(s0.Integrations)),
				Met: float64(s1.Proxy.P50) <= 1.3*float64(s0.Proxy.P50),
				Measured: fmt.Sprintf("%s vs %s at %s (%.2f×)", us(s1.Proxy.P50), us(s0.Proxy.P50), count(s0.Integrations),
					ratio(s1.Proxy.P50, s0.Proxy.P50))},
			verdict{Target: lbl + ": memory", Required: "RSS ≤ 200 MB", Met: s1.RSS <= 200<<20,
				Measured: fmt.Sprintf("VmRSS %s (anonymous %s, file-backed %s; peak %s) with a %s database; %s at %s",
					mib(s1.RSS), mib(s1.RSSAnon), mib(s1.RSSFile), mib(s1.HWM), mib(s1.FileSize), mib(s0.RSS), count(s0.Integrations))},
			verdict{Target: lbl + ": start to READY", Required: "≤ 2 s", Met: s1.Ready <= 2*time.Second,
				Measured: fmt.Sprintf("%s (audit chain of %d events present); %s at %s", ms(s1.Ready), s1.AuditSeq, ms(s0.Ready), count(s0.Integrations))},
		)
	}
	if v, ok := r.pgVerdict(); ok {
		vs = append(vs, v)
	}
	if rt := r.Retention; len(rt.Sizes) == 3 {
		vs = append(vs, verdict{Target: "retention on: database file size", Required: "flat across three rounds",
			Met: rt.flat(), Measured: fmt.Sprintf("%s / %s / %s after rounds of %s events", mib(rt.Sizes[0]), mib(rt.Sizes[1]), mib(rt.Sizes[2]), count(rt.Events))})
	}
	return vs
}

// checks are the earlier issue's targets that this table does not supersede.
func (r *report) checks() []verdict {
	h2a, h2b := r.Proxy["vaultd-h2"][1], r.Proxy["vaultd-h2"][16]
	h3a, h3b := r.Proxy["vaultd-h3"][1], r.Proxy["vaultd-h3"][16]
	hsm := r.HSMAfter - r.HSMBefore
	return []verdict{
		{Target: "HTTP/3 p50 at 1 caller within 1.2× of HTTP/2", Met: float64(h3a.P50) <= 1.2*float64(h2a.P50),
			Measured: fmt.Sprintf("%s vs %s (%.2f×)", us(h3a.P50), us(h2a.P50), ratio(h3a.P50, h2a.P50))},
		{Target: "HTTP/3 req/s at 16 callers within 1.2× of HTTP/2", Met: h3b.RPS*1.2 >= h2b.RPS,
			Measured: fmt.Sprintf("%.0f vs %.0f (HTTP/2 is %.2f× HTTP/3)", h3b.RPS, h2b.RPS, h2b.RPS/h3b.RPS)},
		{Target: "no HSM call on the warm hot path", Met: hsm == 0,
			Measured: fmt.Sprintf("%.0f wrap/unwrap calls in %d measured proxied requests", hsm, h2a.N+h2b.N+h3a.N+h3b.N)},
		{Target: "store_token at 16 writers ≥ ½ raw bbolt batched writes", Met: r.Store.RPS >= r.RawBolt.RPS/2,
			Measured: fmt.Sprintf("%.0f vs %.0f puts/s (%.2f×)", r.Store.RPS, r.RawBolt.RPS, r.Store.RPS/r.RawBolt.RPS)},
	}
}

// count writes n with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (r *report) markdown(vs []verdict) []byte {
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	verdictText := func(v verdict) string {
		if v.Met {
			return "**met**"
		}
		return "**not met**; floor: " + v.Floor
	}
	w("# vaultd benchmarks\n\n")
	w("Generated by `%s` (internal/bench/cmd/vaultd-bench); every figure below comes from that one run,\n", r.Env.Command)
	w("against the same nginx baseline and the same fake upstream. Do not edit the tables by hand: re-run the\n")
	w("command. The analysis section is kept in `internal/bench/cmd/vaultd-bench/analysis.md`.\n\n")

	w("## Targets\n\n| target | required | measured (baseline from the same run) | verdict |\n|---|---|---|---|\n")
	for _, v := range vs {
		if v.Floor == "" {
			v.Floor = "none measured"
		}
		w("| %s | %s | %s | %s |\n", v.Target, v.Required, v.Measured, verdictText(v))
	}
	w("\nThe floors: *minimal Go mTLS proxy* is `vaultd-bench floorproxy` (floorproxy.go), a separate process like\n")
	w("vaultd: TLS 1.3 with client certificates, HTTP/2, `httputil.ReverseProxy` to the same upstream with a\n")
	w("static `Authorization` header, nothing else. Its variants append one ~300-byte line per request to a\n")
	w("file on the database's filesystem with one write(2) (what `sync = \"batch\"` adds per request), or write\n")
	w("and fdatasync it before answering (what `sync = \"always\"` adds, without group commit). *fdatasync* is\n")
	w("append + fdatasync of 300 bytes in the bench's work directory (%d iterations: p50 %s, p99 %s).\n\n",
		r.Fsync.N, us(r.Fsync.P50), us(r.Fsync.P99))

	w("Earlier targets this table does not supersede:\n\n| check | measured | verdict |\n|---|---|---|\n")
	for _, v := range r.checks() {
		vt := "**met**"
		if !v.Met {
			vt = "**not met**"
		}
		w("| %s | %s | %s |\n", v.Target, v.Measured, vt)
	}

	w("\n## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| CPUs (`nproc`) | %d |\n| CPU | %s |\n| kernel | %s |\n| Go | %s |\n| nginx | %s |\n| filesystem of the bench files | %s |\n| date | %s |\n",
		r.Env.CPUs, r.Env.Model, r.Env.Kernel, r.Env.Go, r.Env.Nginx, r.Env.FS, r.Env.Date)
	w("| load average (1/5/15 min) at start | %s |\n| load average at end | %s |\n\n", r.Env.LoadStart, r.Env.LoadEnd)
	w("Everything runs on this one machine over loopback: the load generator, the upstream, nginx, the floor\n")
	w("proxies and vaultd share the CPUs, so absolute figures are lower than on dedicated hosts; the ratios are the point.\n\n")

	w("## Proxied GET, %s per scenario\n\n", r.Duration)
	w("Each caller is a goroutine issuing sequential requests over one shared client (HTTP/2 multiplexed on\n")
	w("one TLS 1.3 connection, or HTTP/3 over QUIC); latency is from sending the request to reading the last\n")
	w("byte of the %d-byte JSON answer. Both vaultd run side by side, identical but for `[audit] sync`.\n\n", len(upstreamBody))
	w("| scenario | callers | requests | p50 | p99 | req/s | p50 vs nginx | req/s vs nginx |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	names := map[string]string{
		"direct":           "direct to the upstream (HTTP/2, no proxy)",
		"nginx":            "nginx, mTLS HTTP/2, static `Authorization`",
		"floor":            "floor: minimal Go mTLS proxy",
		"floor-write":      "floor: minimal Go proxy + one write(2)",
		"floor-fsync":      "floor: minimal Go proxy + write + fdatasync",
		"vaultd-h2":        "vaultd, HTTP/2, `sync = \"batch\"`",
		"vaultd-h3":        "vaultd, HTTP/3, `sync = \"batch\"`",
		"vaultd-h2-always": "vaultd, HTTP/2, `sync = \"always\"`",
	}
	for _, c := range []int{1, 16} {
		n := r.Proxy["nginx"][c]
		for _, t := range targets {
			x := r.Proxy[t][c]
			w("| %s | %d | %d | %s | %s | %.0f | %.2f× | %.2f× |\n", names[t], c, x.N, us(x.P50), us(x.P99), x.RPS,
				ratio(x.P50, n.P50), x.RPS/n.RPS)
		}
	}
	w("\nThe upstream rejected %d requests (it checks every `Authorization` header against the tokens the fake\n", r.UpBad)
	w("provider issued; any rejection fails the run).\n\n")

	w("## Hot path and HSM\n\n")
	w("`vaultd_hsm_operations_total` (wrap + unwrap) was %.0f before the measured proxy runs and %.0f after\n",
		r.HSMBefore, r.HSMAfter)
	w("them: **%.0f HSM calls** across all measured requests. The plaintext DEK is cached in locked memory\n", r.HSMAfter-r.HSMBefore)
	w("(absolute TTL, default 10 min), so a hot tenant costs one unwrap per TTL, not per request.\n\n")

	w("## Refresh storm\n\n")
	w("%d concurrent proxied calls, sent at once by fresh clients of 100 callers each (one warmed HTTP/2\n", r.Storm.Callers)
	w("connection per client), on an integration whose token expires in\n")
	w("1 s (refresh margin %s), the provider answering refreshes in **%s**: **%d refresh(es)** reached the\n",
		refreshMargin, ms(r.StormLatency), r.Storm.Refreshes)
	w("token endpoint, %d errors; caller latency p50 %s, p99 %s, all done in %s. The same burst of %d calls\n",
		r.Storm.Errors, ms(r.Storm.P50), ms(r.Storm.P99), r.Storm.Elapsed.Round(time.Millisecond), r.StormFloor.Callers)
	w("through the minimal Go mTLS proxy (no refresh, no lookup) takes p50 %s, p99 %s: the cost of %d callers\n",
		ms(r.StormFloor.P50), ms(r.StormFloor.P99), r.StormFloor.Callers)
	w("arriving at once on this machine, before any refresh.\n\n")

	if len(r.Scale) > 0 {
		w("## Many integrations\n\n")
		w("A third vaultd (`sync = \"batch\"`). Tenant `acme` and its integration `hot` are made through the API with a\n")
		w("real token; every other tenant and integration is written offline with vaultd stopped, through the real\n")
		w("`storage/bolt` Store: each tenant gets a DEK from the same SoftHSM token (`envelope.Keys.NewDEK`), each\n")
		w("integration a copy of `hot`'s record with fresh tokens of the provider's sizes sealed under its tenant's\n")
		w("DEK. The measured call is `hot` at 1 caller over HTTP/2, after %s warm-up calls; READY is from exec to\n", "the")
		w("the `vaultd ready` log line (the audit chain is verified from the last signed checkpoint); memory is\n")
		w("`/proc/<pid>/status` after the measured run. `NewDEK` creates the tenant's own key object in the HSM first,\n")
		w("as tenant creation in vaultd does, so the token holds one key object per tenant (%s at the largest size,\n", count(r.Scale[len(r.Scale)-1].Tenants))
		w("besides the KEK and the audit key): SoftHSM's file store slows with every object, which is why\n")
		w("`-scale-large` is off by default.\n\n")
		w("| integrations | tenants | generated in | file | start to READY | audit events | p50 | p99 | VmRSS | RssAnon | RssFile | VmHWM |\n")
		w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range r.Scale {
			w("| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", count(s.Integrations), count(s.Tenants),
				s.Generate.Round(100*time.Millisecond), mib(s.FileSize), ms(s.Ready), s.AuditSeq, us(s.Proxy.P50), us(s.Proxy.P99),
				mib(s.RSS), mib(s.RSSAnon), mib(s.RSSFile), mib(s.HWM))
		}
		w("\n")
	} else {
		w("## Many integrations\n\n")
		w("Not run: `-scale-large` is off by default. Every tenant has a key object of its own in the HSM, and\n")
		w("generating 10,000 tenants (one SoftHSM object each) takes far longer than the rest of the run; pass\n")
		w("`-scale-large 10000/1000000` to measure 1 million integrations.\n\n")
	}

	r.pgMarkdown(w)

	w("## store_token vs raw bbolt\n\n")
	w("| writer | writers | ops | p50 | p99 | ops/s |\n|---|---:|---:|---:|---:|---:|\n")
	w("| vaultd `PUT /v1/integrations/{id}` (HTTP/2, distinct ids; record sealed, written, audited) | 16 | %d | %s | %s | %.0f |\n",
		r.Store.N, us(r.Store.P50), us(r.Store.P99), r.Store.RPS)
	w("| raw bbolt `db.Batch` put, %d-byte records, fsync on, MaxBatchDelay as vaultd | 16 | %d | %s | %s | %.0f |\n",
		r.RecordSize, r.RawBolt.N, us(r.RawBolt.P50), us(r.RawBolt.P99), r.RawBolt.RPS)
	w("| raw bbolt `db.Update` put (one commit + fsync each: the durability floor) | 1 | %d | %s | %s | %.0f |\n\n",
		r.RawBolt1.N, us(r.RawBolt1.P50), us(r.RawBolt1.P99), r.RawBolt1.RPS)
	w("The record size is that of a stored integration record (JSON with sealed access and refresh tokens),\n")
	w("read back from vaultd's database after the run.\n\n")

	if rt := r.Retention; len(rt.Sizes) == 3 {
		w("## Audit retention: database file size\n\n")
		w("%s `proxy.request`-sized audit events (530 bytes) appended through the real `storage/bolt` Store, then all\n", count(rt.Events))
		w("but the newest pruned in transactions of 1,000 (`PruneAudit`, as `[audit] retention` does), three times\n")
		w("(%s in all); the file size after each round's appends:\n\n", rt.Elapsed.Round(100*time.Millisecond))
		w("| round | events appended | file size after the appends |\n|---|---:|---:|\n")
		for i, sz := range rt.Sizes {
			w("| %d | %s | %s (%s bytes) |\n", i+1, count(rt.Events), mib(sz), count(int(sz)))
		}
		w("\nbbolt never shrinks its file, but it reuses the pages a prune frees: under constant load with\n")
		w("retention the file stays at the size of one retention window's events instead of growing by a\n")
		w("window per round. Shrinking a file after retention was first enabled on a large trail needs an\n")
		w("offline compaction (`bbolt compact`) with vaultd stopped.\n\n")
	}

	w("%s\n", strings.TrimSpace(analysis))
	if r.Profile != "" {
		w("\n### This run's CPU profile (vaultd, 16 HTTP/2 callers, top 30 by flat time)\n\n```\n%s\n```\n", strings.TrimSpace(r.Profile))
	}
	w("\n## Reproduce\n\n```sh\nsudo scripts/bench.sh            # installs nginx + SoftHSM if missing, builds, runs (~6 min)\n")
	w("BENCH_DURATION=10s scripts/bench.sh   # longer scenarios\n")
	w("BENCH_DURATION=1s scripts/bench.sh -retention-n 5000   # a quick check\n")
	w("scripts/bench.sh -scale-large 10000/1000000   # adds 1 million integrations (slow: one HSM key object per tenant)\n```\n\n")
	w("`scripts/bench.sh` builds `vaultd`/`vaultctl` and the floor proxy without `-race`, starts a throwaway\n")
	w("SoftHSM token, PKI, upstream, nginx, the floor proxies and vaultd (with `VAULTD_PPROF=1`, which serves\n")
	w("`/debug/pprof/` on the ops listener; off by default), runs the scenarios above and rewrites this file.\n")
	w("The CPU profile is left in `$BENCH_OUT` (default `/tmp/vaultd-bench`: `go tool pprof /tmp/vaultd-bench/vaultd\n")
	w("/tmp/vaultd-bench/vaultd-h2-16.cpu.pprof`).\n")
	return b.Bytes()
}
