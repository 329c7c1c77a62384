package postgres

import "context"

// SetTxHook installs f to run inside every transaction of s, before its
// statements (tests kill the connection there).
func SetTxHook(s *Store, f func(ctx context.Context, pid uint32, read bool)) { s.txHook = f }
