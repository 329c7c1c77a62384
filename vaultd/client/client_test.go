package client

import "testing"

func TestNewRejectsNonHTTPS(t *testing.T) {
	if _, err := New("http://127.0.0.1:8443", Options{}); err == nil {
		t.Fatal("plain http accepted")
	}
}
