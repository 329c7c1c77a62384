package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vaultd/vaultd/hsm/pkcs11"
	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/bolt"
	"github.com/vaultd/vaultd/vaultd/client"
	"github.com/vaultd/vaultd/vaultd/envelope"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

// scalePoint is vaultd measured with a database of Integrations records in
// Tenants tenants.
type scalePoint struct {
	Tenants, Integrations int
	Generate              time.Duration // offline generation up to this size
	FileSize              int64
	AuditSeq              uint64        // audit chain length at start
	Ready                 time.Duration // exec to the "vaultd ready" line
	Proxy                 result        // 1 caller, HTTP/2, the real integration
	RSS, RSSAnon, RSSFile int64         // bytes, after warm-up and the measured run
	HWM                   int64         // peak RSS
}

// scale measures vaultd at a small and at a large database: a vaultd of
// its own, where "hot" (tenant acme) is stored through the API with a real
// token, and every other integration is written OFFLINE with vaultd
// stopped, through the real storage/bolt Store and sealed for real: each
// tenant gets a DEK wrapped by the same SoftHSM KEK (envelope.Keys, as
// vaultd does), and each integration two tokens of the provider's sizes
// sealed under it. The records are fixtures (no audit events, as
// storage.AuditFunc allows), otherwise what store_token writes.
func scale(ctx context.Context, o options, dir string, p *pki, up *upstream, appTLS *http.Client, sizes [][2]int) ([]scalePoint, error) {
	v, err := setupVaultd(dir, o.binDir, p, up, "batch")
	if err != nil {
		return nil, err
	}
	if err := v.start(); err != nil {
		return nil, err
	}
	opTLS, err := p.clientTLS("operator")
	if err != nil {
		v.stop()
		return nil, err
	}
	appCfg, err := p.clientTLS("app")
	if err != nil {
		v.stop()
		return nil, err
	}
	op, err := client.New(v.api, client.Options{TLSConfig: opTLS})
	if err != nil {
		v.stop()
		return nil, err
	}
	app, err := client.New(v.api, client.Options{TLSConfig: appCfg})
	if err != nil {
		v.stop()
		return nil, err
	}
	if _, err := op.CreateTenant(ctx, "acme"); err != nil {
		v.stop()
		return nil, fmt.Errorf("scale: create tenant: %w", err)
	}
	tok := up.prov.IssueInitialToken([]string{"contacts.read"})
	// A long-lived token: the measured call must not refresh.
	if _, err := app.StoreToken(ctx, "hot", "example", oauthtest.TokenResponseJSON(tok)); err != nil {
		v.stop()
		return nil, fmt.Errorf("scale: store token: %w", err)
	}
	v.stop()
	accessLen, refreshLen := len(tok.AccessToken.Reveal()), len(tok.RefreshToken.Reveal())

	var pts []scalePoint
	for _, sz := range sizes {
		pt := scalePoint{Tenants: sz[0], Integrations: sz[1]}
		t0 := time.Now()
		seq, err := grow(ctx, v, pt.Tenants, pt.Integrations, accessLen, refreshLen)
		if err != nil {
			return pts, fmt.Errorf("scale: generate %d integrations: %w", pt.Integrations, err)
		}
		pt.Generate, pt.AuditSeq = time.Since(t0), seq
		if fi, err := os.Stat(v.db); err == nil {
			pt.FileSize = fi.Size()
		}
		fmt.Printf("scale: %d integrations in %d tenants generated in %s (file %s)\n", pt.Integrations, pt.Tenants,
			pt.Generate.Round(time.Millisecond), mib(pt.FileSize))
		t0 = time.Now()
		if err := v.start(); err != nil {
			return pts, err
		}
		pt.Ready = time.Since(t0)
		req := getReq(v.api+"/v1/integrations/hot/proxy/contacts/0031000000abcDE", nil)
		if err := warm(appTLS, req, o.warmup); err != nil {
			v.stop()
			return pts, fmt.Errorf("scale: warm-up: %w", err)
		}
		pt.Proxy = run(ctx, "scale", appTLS, req, 1, o.duration, 200000)
		pt.RSS, pt.RSSAnon, pt.RSSFile, pt.HWM = procMem(v.cmd.Process.Pid)
		v.stop()
		if pt.Proxy.Errors > 0 {
			return pts, fmt.Errorf("scale: %d errors, first: %s", pt.Proxy.Errors, pt.Proxy.FirstEr)
		}
		fmt.Printf("scale: %d integrations: ready in %s, p50 %s, RSS %s (anon %s, file %s)\n", pt.Integrations,
			pt.Ready.Round(time.Millisecond), pt.Proxy.P50.Round(time.Microsecond), mib(pt.RSS), mib(pt.RSSAnon), mib(pt.RSSFile))
		pts = append(pts, pt)
	}
	return pts, nil
}

// scaleTenantID names tenant i: acme is tenant 0 (the app's tenant).
func scaleTenantID(i int) string {
	if i == 0 {
		return "acme"
	}
	return fmt.Sprintf("t-%05d", i)
}

// grow brings v's database (vaultd stopped) to tenants tenants holding
// integrations integrations between them, evenly, and returns the audit
// chain's length.
func grow(ctx context.Context, v *vaultd, tenants, integrations, accessLen, refreshLen int) (uint64, error) {
	if err := os.Setenv("SOFTHSM2_CONF", strings.TrimPrefix(v.softhsmEnv, "SOFTHSM2_CONF=")); err != nil {
		return 0, err
	}
	kr, err := pkcs11.OpenKeyring(ctx, pkcs11.Config{Module: v.hsmModule, TokenLabel: v.hsmLabel, PIN: v.hsmPIN, KEKLabel: "vaultd-kek"}, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, fmt.Errorf("open HSM: %w", err)
	}
	defer kr.Close()
	keys, err := envelope.NewKeys(kr, envelope.Options{JanitorInterval: -1})
	if err != nil {
		return 0, err
	}
	defer keys.Close()
	// NoSync while generating (one sync at the end): the fixture is not
	// timed and a crash only loses the fixture.
	s, err := bolt.Open(ctx, v.db, bolt.Options{NoSync: true, MaxBatchDelay: 20 * time.Millisecond})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	hot, err := s.GetIntegration(ctx, "acme", "hot")
	if err != nil {
		return 0, fmt.Errorf("template: %w", err)
	}
	next := make(chan int)
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	// Several tenants at once: their writes share bbolt batches, and the
	// sealing of one overlaps the commit of another.
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				quota := integrations / tenants
				if i < integrations%tenants {
					quota++
				}
				if err := fillTenant(ctx, s, keys, hot, scaleTenantID(i), quota, accessLen, refreshLen); err != nil {
					errc <- fmt.Errorf("tenant %s: %w", scaleTenantID(i), err)
					return
				}
			}
		}()
	}
	var ferr error
feed:
	for i := 0; i < tenants; i++ {
		select {
		case next <- i:
		case ferr = <-errc:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ferr == nil {
		select {
		case ferr = <-errc:
		default:
		}
	}
	if ferr != nil {
		return 0, ferr
	}
	head, err := s.AuditHead(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.Close(); err != nil {
		return 0, err
	}
	// The generation ran with NoSync: make the file durable once.
	f, err := os.OpenFile(v.db, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return head.Seq, f.Sync()
}

// fillTenant creates tenant id if missing (DEK from the HSM) and adds
// integrations until it holds quota, copying hot's shape with fresh
// tokens of the provider's sizes sealed under the tenant's DEK.
func fillTenant(ctx context.Context, s *bolt.Store, keys *envelope.Keys, hot storage.Integration, id string, quota, accessLen, refreshLen int) error {
	t, err := s.GetTenant(ctx, id)
	if err != nil {
		dek, err := keys.NewDEK(ctx, id, 1)
		if err != nil {
			return err
		}
		t = storage.Tenant{ID: id, CreatedAt: time.Now().UTC(), Status: storage.TenantActive,
			KEKVersion: dek.KEKVersion, DEKVersion: 1, DEKs: []storage.WrappedDEK{dek}}
		if t, _, err = s.CreateTenant(ctx, t, nil); err != nil {
			return err
		}
	}
	have, err := s.ListIntegrations(ctx, id)
	if err != nil {
		return err
	}
	if len(have) >= quota {
		return nil
	}
	sealer, err := keys.HoldCurrentDEK(ctx, t)
	if err != nil {
		return err
	}
	defer sealer.Release()
	batch := make([]storage.Integration, 0, quota-len(have))
	for n := len(have); n < quota; n++ {
		in := hot
		in.ID = fmt.Sprintf("i-%06d", n)
		in.TenantID = id
		if in.AccessToken, err = sealer.Seal(in.ID, "access_token", randToken(accessLen)); err != nil {
			return err
		}
		if in.RefreshToken, err = sealer.Seal(in.ID, "refresh_token", randToken(refreshLen)); err != nil {
			return err
		}
		batch = append(batch, in)
	}
	_, err = s.PutIntegrations(ctx, id, batch)
	return err
}

func randToken(n int) []byte {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b)[:n])
}

// procMem reads VmRSS, RssAnon, RssFile and VmHWM of pid, in bytes.
func procMem(pid int) (rss, anon, file, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		var kb int64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return
}
