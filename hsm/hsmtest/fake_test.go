package hsmtest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vaultd/vaultd/hsm"
)

func TestFakeKeyringSuite(t *testing.T) {
	RunKeyringSuite(t, func(t *testing.T) hsm.Keyring { return NewFake() })
}

func TestFakeFailuresAndCounters(t *testing.T) {
	ctx := t.Context()
	f := NewFake()
	w, err := f.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}

	f.FailNext(ErrInjected)
	f.FailNext(hsm.ErrUnavailable)
	if _, err := f.Unwrap(ctx, w, nil); !errors.Is(err, ErrInjected) {
		t.Fatalf("first injected: %v", err)
	}
	if err := f.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("second injected: %v", err)
	}
	if _, err := f.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("queue drained, want success: %v", err)
	}

	f.Fail.Store(true)
	if _, err := f.Wrap(ctx, []byte("k"), nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Fail: Wrap err = %v", err)
	}
	if _, err := f.Unwrap(ctx, w, nil); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Fail: Unwrap err = %v", err)
	}
	if err := f.Ping(ctx); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Fail: Ping err = %v", err)
	}
	f.Fail.Store(false)

	if f.Wraps() != 2 || f.Unwraps() != 3 || f.Pings() != 2 || f.Calls() != 7 {
		t.Fatalf("counters: wraps=%d unwraps=%d pings=%d calls=%d", f.Wraps(), f.Unwraps(), f.Pings(), f.Calls())
	}
}

func TestFakeRotate(t *testing.T) {
	ctx := t.Context()
	f := NewFake()
	pt := []byte("0123456789abcdef0123456789abcdef")
	old, err := f.Wrap(ctx, pt, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Rotate(); v != 2 || f.CurrentVersion() != 2 {
		t.Fatalf("Rotate = %d, current %d; want 2", v, f.CurrentVersion())
	}
	got, err := f.Unwrap(ctx, old, []byte("a"))
	if err != nil || !bytes.Equal(got.Reveal(), pt) {
		t.Fatalf("old-version unwrap after rotate: %v", err)
	}
	nw, err := f.Wrap(ctx, pt, []byte("a"))
	if err != nil || nw.KEKVersion != 2 {
		t.Fatalf("new wrap version %d, err %v", nw.KEKVersion, err)
	}
	// A version-1 blob relabelled as version 2 fails.
	old.KEKVersion = 2
	if _, err := f.Unwrap(ctx, old, []byte("a")); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("relabelled blob: %v", err)
	}
}

func TestFakeTenantKeys(t *testing.T) {
	ctx := t.Context()
	f := NewFake()
	if err := f.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateTenantKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	b, err := f.WrapForTenant(ctx, "acme", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	f.FailNext(hsm.ErrUnavailable)
	if _, err := f.UnwrapForTenant(ctx, "acme", b); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("injected failure: %v", err)
	}
	f.Fail.Store(true)
	if err := f.DestroyTenantKey(ctx, "acme"); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Fail: DestroyTenantKey err = %v", err)
	}
	f.Fail.Store(false)
	if c, d, p := f.TenantKeyStats(); c != 1 || d != 0 || p != 1 {
		t.Fatalf("stats before destroy: %d %d %d", c, d, p)
	}
	for range 2 {
		if err := f.DestroyTenantKey(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	if c, d, p := f.TenantKeyStats(); c != 1 || d != 1 || p != 0 {
		t.Fatalf("stats after destroy: %d %d %d", c, d, p)
	}
	if f.Wraps() != 1 || f.Unwraps() != 1 {
		t.Fatalf("counters: wraps=%d unwraps=%d", f.Wraps(), f.Unwraps())
	}
}
