package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/vaultd/vaultd/vaultd/api"
)

// The client keeps a backup only when the stream ends with trailers that
// match what it received; vaultd's side of the protocol is exercised by the
// e2e backup test, these are the failure shapes a real server can produce.
func TestBackupTrailers(t *testing.T) {
	data := bytes.Repeat([]byte("bbolt page "), 10000)
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	size := strconv.Itoa(len(data))

	cases := []struct {
		name      string
		size, sum string // trailers sent; "" = not sent
		abort     bool   // reset the stream after half the body
		wantErr   bool
	}{
		{"valid", size, good, false, false},
		{"no trailers", "", "", false, true},
		{"wrong checksum", size, hex.EncodeToString(make([]byte, 32)), false, true},
		{"wrong size", strconv.Itoa(len(data) + 1), good, false, true},
		{"aborted mid-stream", size, good, true, true},
	}
	for _, tc := range cases {
		for _, h2 := range []bool{false, true} {
			name := tc.name + map[bool]string{false: "/http1.1", true: "/http2"}[h2]
			t.Run(name, func(t *testing.T) {
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path != "/v1/admin/backup" || r.Method != http.MethodGet {
						http.NotFound(w, r)
						return
					}
					w.Header().Set("Trailer", "X-Vaultd-Backup-Size, X-Vaultd-Backup-Sha256")
					if tc.abort {
						w.Write(data[:len(data)/2])
						w.(http.Flusher).Flush()
						panic(http.ErrAbortHandler)
					}
					w.Write(data)
					if tc.size != "" {
						w.Header().Set("X-Vaultd-Backup-Size", tc.size)
						w.Header().Set("X-Vaultd-Backup-Sha256", tc.sum)
					}
				}))
				srv.EnableHTTP2 = h2
				srv.StartTLS()
				defer srv.Close()
				c, err := New(srv.URL, Options{Transport: srv.Client().Transport})
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				res, err := c.Backup(t.Context(), &got)
				if tc.wantErr {
					if err == nil {
						t.Fatal("accepted a backup that is not vouched for")
					}
					if !tc.abort && !errors.Is(err, ErrBackupIncomplete) {
						t.Fatalf("error %v, want ErrBackupIncomplete", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), data) || res.Bytes != int64(len(data)) || res.SHA256 != good {
					t.Fatalf("result %+v", res)
				}
			})
		}
	}
}

func TestBackupErrorAnswer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":{"code":"forbidden","message":"not permitted","request_id":"r1"}}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{Transport: srv.Client().Transport})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := c.Backup(t.Context(), &got); !IsCode(err, api.CodeForbidden) || got.Len() != 0 {
		t.Fatalf("err %v, %d bytes written", err, got.Len())
	}
}
