package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/storage"
)

func hashOfLine(t *testing.T, line []byte) string {
	t.Helper()
	ev, err := ParseEvent(line)
	if err != nil {
		t.Fatal(err)
	}
	return ev.Hash
}

func wantVerifierError(t *testing.T, err error, seq uint64, reason string) {
	t.Helper()
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != seq || !strings.Contains(ce.Reason, reason) {
		t.Fatalf("error %v, want a *ChainError at seq %d with %q", err, seq, reason)
	}
}

// A segment checked from an anchor (seq, hash) known from elsewhere must
// start at seq+1 from exactly that hash; a head-truncated file cannot pass
// as the segment after a known point.
func TestVerifierAnchor(t *testing.T) {
	lines := chainLines(t)
	seg := join(lines[4:]) // seq 5..12
	h4 := hashOfLine(t, lines[3])

	t.Run("right anchor", func(t *testing.T) {
		var v Verifier
		v.Anchor(4, h4)
		if err := v.AddReader(bytes.NewReader(seg)); err != nil {
			t.Fatal(err)
		}
		if res := v.Result(); !res.Anchored || res.FirstSeq != 5 || res.LastSeq != chainN || res.Events != chainN-4 {
			t.Fatalf("%+v", res)
		}
	})
	t.Run("wrong hash", func(t *testing.T) {
		var v Verifier
		v.Anchor(4, hashOfLine(t, lines[2]))
		wantVerifierError(t, v.AddReader(bytes.NewReader(seg)), 5, "anchor")
	})
	t.Run("events missing after the anchor", func(t *testing.T) {
		var v Verifier
		v.Anchor(3, hashOfLine(t, lines[2]))
		wantVerifierError(t, v.AddReader(bytes.NewReader(seg)), 4, "seq 5")
	})
	t.Run("file starts before the anchor", func(t *testing.T) {
		var v Verifier
		v.Anchor(6, hashOfLine(t, lines[5]))
		wantVerifierError(t, v.AddReader(bytes.NewReader(seg)), 7, "seq 5")
	})
	t.Run("genesis anchor", func(t *testing.T) {
		var v Verifier
		v.Anchor(0, storage.GenesisHash)
		if err := v.AddReader(bytes.NewReader(join(lines))); err != nil || !v.Result().Anchored {
			t.Fatalf("%+v, %v", v.Result(), err)
		}
		var w Verifier
		w.Anchor(0, storage.GenesisHash)
		wantVerifierError(t, w.AddReader(bytes.NewReader(seg)), 1, "seq 5")
	})
	t.Run("malformed first line names the expected seq", func(t *testing.T) {
		var v Verifier
		v.Anchor(4, h4)
		wantVerifierError(t, v.AddReader(strings.NewReader("not json\n")), 5, "")
	})
}

// One Verifier fed several files in order checks the chain across the
// file boundaries: archived segments followed by the current file.
func TestVerifierAcrossReaders(t *testing.T) {
	lines := chainLines(t)
	feed := func(parts ...[]byte) (VerifyResult, error) {
		var v Verifier
		for _, p := range parts {
			if err := v.AddReader(bytes.NewReader(p)); err != nil {
				return v.Result(), err
			}
		}
		return v.Result(), nil
	}
	t.Run("split", func(t *testing.T) {
		// A trailing blank line ends a file, not the chain.
		res, err := feed(append(join(lines[:5]), '\n'), nil, join(lines[5:]))
		if err != nil || res.Events != chainN || !res.Anchored || res.LastSeq != chainN {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("gap between files", func(t *testing.T) {
		_, err := feed(join(lines[:5]), join(lines[6:]))
		wantVerifierError(t, err, 6, "seq 7 follows seq 5")
		var ce *ChainError
		if errors.As(err, &ce) && ce.Line != 1 {
			t.Fatalf("line %d, want 1 (of the second file)", ce.Line)
		}
	})
	t.Run("overlap between files", func(t *testing.T) {
		_, err := feed(join(lines[:6]), join(lines[5:]))
		wantVerifierError(t, err, 7, "seq 6 follows seq 6")
	})
	t.Run("files out of order", func(t *testing.T) {
		_, err := feed(join(lines[6:]), join(lines[:6]))
		wantVerifierError(t, err, 1, "seq 1 follows seq 12")
	})
	t.Run("errors stick", func(t *testing.T) {
		var v Verifier
		err1 := v.AddReader(strings.NewReader("garbage\n"))
		if err2 := v.AddReader(bytes.NewReader(join(lines))); err1 == nil || err2 != err1 {
			t.Fatalf("%v then %v", err1, err2)
		}
	})
}
