package api

import (
	"encoding/base64"
	"io"
	"testing"
)

func TestExecuteResponseHTTP(t *testing.T) {
	body := "héllo"
	r, err := ExecuteResponse{Status: 201, Headers: map[string]string{"X-A": "1"}, Body: &body}.HTTPResponse()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 201 || r.Header.Get("X-A") != "1" || string(b) != body {
		t.Fatalf("got %d %v %q", r.StatusCode, r.Header, b)
	}
	raw := []byte{0xff, 0x00, 0x80}
	enc := base64.StdEncoding.EncodeToString(raw)
	r, err = ExecuteResponse{Status: 200, BodyBase64: &enc}.HTTPResponse()
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(r.Body)
	if string(b) != string(raw) {
		t.Fatalf("binary body %x", b)
	}
	bad := "!!"
	if _, err := (ExecuteResponse{Status: 200, BodyBase64: &bad}).HTTPResponse(); err == nil {
		t.Fatal("bad base64 accepted")
	}
}
