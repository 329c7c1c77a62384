// Package envelope encrypts stored token fields under per-tenant data keys
// (DEKs) that are themselves wrapped by the HSM key-encryption key.
//
// # Ciphertext format (v1)
//
//	'V' 'D' 'E' 0x01 | dek_version u32be | nonce[12] | AES-256-GCM ciphertext || tag[16]
//
// The format byte after the magic versions the layout and the additional
// data from day one; ParseHeader and Open reject any other value with
// ErrFormat, so a future v2 can be introduced alongside without ambiguity.
// dek_version says which of the tenant's DEKs (storage.Tenant.DEKs) opens
// the value, which lets a tenant rotate its DEK while old records stay
// readable until they are re-sealed. The 96-bit nonce is random per seal
// (cipher.NewGCMWithRandomNonce, the FIPS 140-3 approved mode); at a
// collision bound of 2^32 seals per DEK, rotation comes long before.
//
// The GCM additional data is
//
//	"vaultd/envelope/v1" 0x00
//	| u32be len(tenant) tenant | u32be len(integration) integration | u32be len(field) field
//	| format (1 byte) | dek_version u32be
//
// Length prefixes make it injective whatever bytes the names contain, so a
// ciphertext copied to another tenant, integration or field, or whose
// header is re-labelled with another DEK version, fails with ErrDecrypt.
// Known-answer vectors in testdata/vectors.json pin the format.
//
// # DEKs
//
// A DEK is 32 bytes from crypto/rand, wrapped by hsm.Keyring.Wrap with
// additional data "vaultd/dek/v1" 0x00 | u32be len(tenant) tenant |
// u32be version, so a wrapped DEK copied into another tenant's record (or
// relabelled) fails to unwrap in the HSM. Keyring errors are wrapped with %w
// (errors.Is(err, hsm.ErrUnavailable) holds) and nothing is served from a
// fallback: fail closed.
//
// # Tenant keys and crypto-shredding
//
// When the keyring is an hsm.TenantKeyring (the PKCS#11 backend is), each
// tenant has its own non-extractable AES-256 key in the HSM and a DEK is
// wrapped twice (tenant.go): inner = the tenant key's AES-GCM wrap of the
// DEK (the blob of hsm.AppendTenantWrapped, bound to the tenant), outer =
// the KEK's wrap of that blob with additional data "vaultd/dek-tenant/v1"
// 0x00 | u32be len(tenant) tenant | u32be version (its own label, so the
// record's storage.WrappedDEK.TenantWrapped flag cannot be flipped). NewDEK
// creates the tenant key on first use. KEK rotation (RewrapDEK) re-wraps
// only the outer layer, without the tenant key. UpgradeDEK gives an older,
// single-wrapped DEK the tenant layer (same key). Shred evicts the
// tenant's cached DEKs and destroys its tenant key: from then on every copy
// of its tenant-wrapped DEKs, in the database or a backup, fails with
// ErrShredded, even with the same HSM and KEK. Limit: a backup taken
// before a tenant's DEKs were upgraded holds them under the KEK alone and
// stays readable while that KEK version exists. A keyring without tenant
// keys keeps the single KEK wrap; Shred then only evicts, and
// CryptoShredding reports false.
//
// # Cache
//
// Unwrapped DEKs are cached per (tenant, DEK version) so the hot path makes
// no HSM call once warm. Each cached DEK lives in its own buffer from
// internal/lockedmem: mmap'd outside the Go heap (never copied by the GC),
// mlocked (never swapped), MADV_DONTDUMP, between PROT_NONE guard pages,
// read-only while cached, zeroed before munmap on eviction. Memory is locked
// per buffer rather than with mlockall(2) because vaultd maps its bbolt
// database file: mlockall would pin that whole mapping, and every future heap
// arena, in RAM. When mlock is refused, Options.RequireLock decides: fail
// (ErrMemoryLock, checked once at NewKeys), or fall back to unlocked but still
// guarded and zeroed memory, reported by Stats (Locked=false,
// UnlockedAllocs).
//
// Entries expire TTL after their unwrap (absolute, so an HSM-side change takes
// effect within TTL; checked on every access and swept by a janitor), the
// least recently used is evicted beyond MaxEntries, and Evict/EvictAll/Close
// zero them. Entries are reference-counted: a buffer evicted while a seal
// or open is reading it is zeroed and unmapped when that call finishes. A
// cache hit also compares the wrapped bytes it was loaded from with the
// tenant record's, so a tenant re-created under the same id (or a DEK
// re-wrapped under a new KEK) never gets a stale key. Concurrent misses for
// the same wrapped DEK share one Unwrap.
//
// Limits: the AES key schedule built for each operation is in ordinary Go
// memory for the duration of that call (crypto/aes offers no way to place
// or wipe it), and OpenField returns plaintext in a heap secret.Bytes that
// the caller wipes.
package envelope
