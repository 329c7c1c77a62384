package bolt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage"
	"github.com/vaultd/vaultd/storage/storagetest"
)

// A database file cut short makes bbolt fault (SIGSEGV) instead of
// returning an error; preflight turns every such cut into ErrCorrupt, for
// read-write and read-only opens, before bbolt maps the file.
func TestTruncatedFileIsCorruptNotACrash(t *testing.T) {
	ctx := t.Context()
	src := newPath(t)
	s := openT(t, src, Options{})
	if _, err := storagetest.NoEvent(s).CreateTenant(ctx, storagetest.NewTenant("acme")); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		in := storagetest.NewIntegration("acme", "i"+string(rune('a'+i%26))+string(rune('a'+i/26)), 700)
		if _, err := storagetest.NoEvent(s).PutIntegration(ctx, "acme", in); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	// bbolt grows the file ahead of use: only the pages below the newest
	// meta page's high-water mark are needed; cutting unused space away
	// leaves a valid database.
	m0, ok0 := parseMeta(full)
	m1, ok1 := parseMeta(full[page:])
	if !ok0 || !ok1 {
		t.Fatal("meta pages do not parse")
	}
	newest := m1
	if m0.txid > m1.txid {
		newest = m0
	}
	if int(newest.pageSize) != page {
		t.Fatalf("test premise: page size %d, os page size %d", newest.pageSize, page)
	}
	used := int(newest.hwm) * page
	if used < 8*page || used > len(full) {
		t.Fatalf("test premise: want many used pages, got %d of %d bytes", used, len(full))
	}
	// Every page boundary past the two meta pages, plus cuts inside pages.
	var cuts []int
	for n := 2 * page; n < used; n += page {
		cuts = append(cuts, n, n+page/2)
	}
	cuts = append(cuts, used-1)
	for _, n := range cuts {
		path := newPath(t)
		if err := os.WriteFile(path, full[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		for _, ro := range []bool{true, false} {
			st, err := Open(ctx, path, Options{ReadOnly: ro})
			if err == nil {
				st.Close()
				t.Fatalf("cut at %d of %d bytes (read-only %v): opened", n, len(full), ro)
			}
			if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("cut at %d (read-only %v): %v, want ErrCorrupt naming the truncation", n, ro, err)
			}
		}
	}
	// Cut exactly at the high-water mark: nothing needed is lost.
	path := newPath(t)
	if err := os.WriteFile(path, full[:used], 0o600); err != nil {
		t.Fatal(err)
	}
	st := openT(t, path, Options{ReadOnly: true})
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if ins, err := st.ListIntegrations(ctx, "acme"); err != nil || len(ins) != 200 {
		t.Fatalf("after a cut at the mark: %d integrations, %v", len(ins), err)
	}
}

func TestParseMetaRejectsDamage(t *testing.T) {
	path := newPath(t)
	st := openT(t, path, Options{})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseMeta(b); !ok {
		t.Fatal("a fresh file's meta page does not parse")
	}
	for i := pageHeaderSize; i < pageHeaderSize+metaSize; i++ {
		c := append([]byte(nil), b[:pageHeaderSize+metaSize]...)
		c[i] ^= 0x40
		if _, ok := parseMeta(c); ok {
			t.Fatalf("meta with byte %d flipped still parses", i)
		}
	}
	if _, ok := parseMeta(b[:40]); ok {
		t.Fatal("short buffer parses")
	}
}

// preflight reads untrusted bytes (a restored or copied file): whatever
// they are, it answers nil or an error, never panics, and never passes
// bytes whose newest valid meta page needs more than there are.
func FuzzPreflight(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.db")
	st, err := Open(context.Background(), path, Options{})
	if err != nil {
		f.Fatal(err)
	}
	if err := st.Close(); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	page := os.Getpagesize()
	// The two meta pages, whole and cut: what preflight reads.
	f.Add(seed[:page+pageHeaderSize+metaSize])
	f.Add(seed[:2*page])
	f.Add(seed[:100])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		size := func() (int64, error) { return int64(len(b)), nil }
		if err := checkHeader("fuzz.db", bytes.NewReader(b), size); err != nil {
			// A refusal is always the one corruption error, never an I/O
			// error from reading too little.
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("refused with %v, want ErrCorrupt", err)
			}
			return
		}
		m0, ok0 := parseMeta(b)
		var m1 metaInfo
		ok1 := false
		off := page
		if ok0 {
			off = int(m0.pageSize)
		}
		if off < len(b) {
			m1, ok1 = parseMeta(b[off:])
		}
		m, ok := m0, ok0
		if ok1 && (!ok0 || m1.txid > m0.txid) {
			m, ok = m1, true
		}
		if ok && m.hwm*uint64(m.pageSize) > uint64(len(b)) {
			t.Fatalf("passed %d bytes whose newest meta needs %d", len(b), m.hwm*uint64(m.pageSize))
		}
	})
}
