package vault

import (
	"errors"
	"fmt"
	"testing"
)

// A refusal's reason travels as a type, not as text to parse, and still
// matches ErrBadRequest through wrapping.
func TestBadRequestError(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("store: %w", badRequest("unknown provider"))
	var br *BadRequestError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &br) || br.Reason != "unknown provider" {
		t.Fatalf("%v: Is %t, reason %+v", err, errors.Is(err, ErrBadRequest), br)
	}
	if got := badRequest("invalid tenant id").Error(); got != "vault: bad request: invalid tenant id" {
		t.Fatalf("text %q", got)
	}
	if errors.Is(badRequest("x"), ErrNotFound) {
		t.Fatal("matches another sentinel")
	}
}
