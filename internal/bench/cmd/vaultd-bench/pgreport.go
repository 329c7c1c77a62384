package main

import (
	"fmt"
	"time"
)

// pgTargetRatio is the target: a proxied call on one PostgreSQL
// node within this factor of bbolt's p50.
const pgTargetRatio = 1.5

// pgVerdict is the PostgreSQL target, when PostgreSQL was measured.
func (r *report) pgVerdict() (verdict, bool) {
	g, ok := r.PG.Proxy[1][1]
	if !ok {
		return verdict{}, false
	}
	b, a := r.Proxy["vaultd-h2"][1], r.Proxy["vaultd-h2-always"][1]
	floor := b.P50 + r.PG.Commit.P50
	return verdict{
		Target:   "PostgreSQL, 1 node: proxied call p50, 1 caller",
		Required: fmt.Sprintf("≤ %.1f× bbolt p50 (`sync = \"batch\"`)", pgTargetRatio),
		Met:      float64(g.P50) <= pgTargetRatio*float64(b.P50),
		Measured: fmt.Sprintf("%s vs bbolt %s (%.2f×); bbolt `sync = \"always\"` %s", us(g.P50), us(b.P50), ratio(g.P50, b.P50), us(a.P50)),
		Floor: fmt.Sprintf("bbolt vaultd p50 + the transaction of one audit append on PostgreSQL (%s) = %s = %.2f× bbolt; vaultd on PostgreSQL is %.2f× that floor (%s above it)",
			us(r.PG.Commit.P50), us(floor), ratio(floor, b.P50), ratio(g.P50, floor), us(g.P50-floor)),
	}, true
}

// pgMarkdown writes the "PostgreSQL" section.
func (r *report) pgMarkdown(w func(string, ...any)) {
	w("## PostgreSQL\n\n")
	pg := r.PG
	if pg.Skipped != "" {
		w("Not measured in this run: %s.\n\n", pg.Skipped)
		return
	}
	w("vaultd with `[storage] backend = \"postgres\"`, measured in the same run as the bbolt vaultd above, on a\n")
	w("throwaway cluster on this machine (%s) over loopback TCP with a\n", pg.Server)
	w("password login. The database is new and owned by a role that is neither superuser nor `BYPASSRLS`, so\n")
	w("row-level security applies as in production; `vaultctl init` made the schema. On PostgreSQL `sync = \"batch\"`\n")
	w("acts as `\"always\"`: every event, the proxied call's included, is committed in the database before its\n")
	w("answer. The cluster of `scripts/pg.sh` runs with fsync and synchronous_commit off, so a commit costs a\n")
	w("round trip but no disk flush: compare with bbolt `sync = \"batch\"`, not with the durable `\"always\"`.\n\n")
	w("1 node, then 3 nodes on the same database and the same SoftHSM token (as behind a load balancer), the\n")
	w("load spread over them round robin, request by request. Proxied GET over HTTP/2 as above, %s per scenario:\n\n", r.Duration)
	w("| scenario | callers | requests | p50 | p99 | req/s | p50 vs bbolt | req/s vs bbolt |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range []int{1, 16} {
		b := r.Proxy["vaultd-h2"][c]
		row := func(name string, x result) {
			w("| %s | %d | %d | %s | %s | %.0f | %.2f× | %.2f× |\n", name, c, x.N, us(x.P50), us(x.P99), x.RPS, ratio(x.P50, b.P50), x.RPS/b.RPS)
		}
		row("vaultd on bbolt, `sync = \"batch\"`", b)
		row("vaultd on bbolt, `sync = \"always\"`", r.Proxy["vaultd-h2-always"][c])
		row("vaultd on PostgreSQL, 1 node", pg.Proxy[1][c])
		row("vaultd on PostgreSQL, 3 nodes", pg.Proxy[3][c])
	}
	if v, ok := r.pgVerdict(); ok {
		w("\n**Target** (%s): %s. Measured: %s. ", v.Required, map[bool]string{true: "**met**", false: "**not met**"}[v.Met], v.Measured)
		if !v.Met {
			w("Floor: %s.", v.Floor)
		} else {
			w("For scale: %s.", v.Floor)
		}
		w("\n\n")
	}
	w("The floor: the transaction of one audit append as `storage/postgres` makes it (BEGIN; the chain's head row\n")
	w("`SELECT … FOR UPDATE`; `INSERT` of a 530-byte event, a `proxy.request`'s size; `UPDATE` of the head; COMMIT: five\n")
	w("round trips) from one pgx connection, %d times: p50 %s, p99 %s. An audited call on PostgreSQL pays at least\n",
		pg.Commit.N, us(pg.Commit.P50), us(pg.Commit.P99))
	w("that on top of what it pays on bbolt with `sync = \"batch\"`, whose audit append is one write(2).\n\n")
	w("All of it shares this machine's %d CPUs: the load generator, the upstream, PostgreSQL and, in the 3-node\n", r.Env.CPUs)
	w("rows, three vaultd processes, so three nodes add no capacity here and every audited call still\n")
	w("serialises on the chain's head row (operations.md §19); the 3-node rows show the cost of sharing, not\n")
	w("the throughput of three hosts.\n\n")

	w("### store_token on PostgreSQL\n\n")
	w("`PUT /v1/integrations/{id}` from 16 writers to distinct ids (sealed, written, audited), %s:\n\n", r.Duration)
	w("| store | writers | ops | p50 | p99 | ops/s | vs bbolt |\n|---|---:|---:|---:|---:|---:|---:|\n")
	w("| bbolt, 1 node (above) | 16 | %d | %s | %s | %.0f | 1.00× |\n", r.Store.N, us(r.Store.P50), us(r.Store.P99), r.Store.RPS)
	for _, n := range []int{1, 3} {
		x := pg.Store[n]
		w("| PostgreSQL, %d node(s) | 16 | %d | %s | %s | %.0f | %.2f× |\n", n, x.N, us(x.P50), us(x.P99), x.RPS, x.RPS/r.Store.RPS)
	}

	w("\n### Refresh storm on PostgreSQL\n\n")
	w("As in the refresh storm above (%d callers at once, provider latency %s); with 3 nodes the callers' clients\n", r.Storm.Callers, ms(r.StormLatency))
	w("are spread over the nodes, and the refresh is serialised across them by a PostgreSQL advisory lock:\n\n")
	w("| store | callers | refreshes | errors | p50 | p99 | all done in |\n|---|---:|---:|---:|---:|---:|---:|\n")
	srow := func(name string, s stormResult) {
		w("| %s | %d | %d | %d | %s | %s | %s |\n", name, s.Callers, s.Refreshes, s.Errors, ms(s.P50), ms(s.P99), s.Elapsed.Round(time.Millisecond))
	}
	srow("bbolt, 1 node (above)", r.Storm)
	srow("PostgreSQL, 1 node", pg.Storm[1])
	srow("PostgreSQL, 3 nodes", pg.Storm[3])
	ok := pg.Storm[1].Refreshes == 1 && pg.Storm[3].Refreshes == 1 && pg.Storm[1].Errors == 0 && pg.Storm[3].Errors == 0
	w("\nExactly one refresh and no error on each: **%s**.\n\n", map[bool]string{true: "yes", false: "no"}[ok])
}
