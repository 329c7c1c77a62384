package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors. Messages name lengths and versions at most, never
// plaintext or key bytes.
var (
	// ErrFormat: the sealed value is too short, lacks the magic, or names a
	// format version this binary does not know.
	ErrFormat = errors.New("envelope: malformed or unsupported ciphertext")
	// ErrDecrypt: authentication failed (wrong key, tampered bytes, or the
	// value was moved to another tenant, integration, field or DEK version).
	ErrDecrypt = errors.New("envelope: decryption failed")
	// ErrKeySize: a DEK is not 32 bytes.
	ErrKeySize = errors.New("envelope: DEK must be 32 bytes")
	// ErrAAD: a tenant, integration or field name is empty or too long.
	ErrAAD = errors.New("envelope: invalid tenant, integration or field name")
)

const (
	// FormatV1 is the only format version written and accepted.
	FormatV1 byte = 0x01

	// KeySize is the DEK size (AES-256).
	KeySize = 32
	// NonceSize is the GCM nonce size (96 bits).
	NonceSize = 12
	// TagSize is the GCM tag size.
	TagSize = 16

	magic      = "VDE"
	prefixLen  = len(magic) + 1 + 4 // magic | format | dek_version
	headerLen  = prefixLen + NonceSize
	minSealed  = headerLen + TagSize
	maxNameLen = 1024 // ids are at most 128 bytes; this only rejects nonsense

	aadLabel = "vaultd/envelope/v1"
)

// Overhead is how many bytes Seal adds to the plaintext.
const Overhead = minSealed

// AAD names where a sealed value belongs. All three are required.
type AAD struct {
	Tenant, Integration, Field string
}

// Header is the parsed fixed part of a sealed value. Nonce and Body alias
// the input slice.
type Header struct {
	Format     byte
	DEKVersion uint32
	Nonce      []byte
	Body       []byte // ciphertext || tag
}

// ParseHeader splits a sealed value. It checks the magic, the format
// version and the minimum length, not authenticity.
func ParseHeader(sealed []byte) (Header, error) {
	if len(sealed) < len(magic)+1 || string(sealed[:len(magic)]) != magic {
		return Header{}, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	if f := sealed[len(magic)]; f != FormatV1 {
		return Header{}, fmt.Errorf("%w: unknown format version %d", ErrFormat, f)
	}
	if len(sealed) < minSealed {
		return Header{}, fmt.Errorf("%w: %d bytes, need at least %d", ErrFormat, len(sealed), minSealed)
	}
	return Header{
		Format:     sealed[len(magic)],
		DEKVersion: binary.BigEndian.Uint32(sealed[len(magic)+1:]),
		Nonce:      sealed[prefixLen:headerLen:headerLen],
		Body:       sealed[headerLen:],
	}, nil
}

// Seal encrypts plaintext under dek with AES-256-GCM and a random 96-bit
// nonce, binding aad, the format version and dekVersion:
//
//	'V' 'D' 'E' 0x01 | dek_version u32be | nonce[12] | ciphertext || tag[16]
func Seal(dek []byte, dekVersion uint32, aad AAD, plaintext []byte) ([]byte, error) {
	block, ad, err := sealInputs(dek, dekVersion, aad)
	if err != nil {
		return nil, err
	}
	// NewGCMWithRandomNonce draws the nonce inside the crypto module and
	// writes it in front of the ciphertext, which is exactly our layout
	// after the prefix. It is also the FIPS 140-3 approved GCM mode.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("envelope: gcm: %w", err)
	}
	out := make([]byte, prefixLen, minSealed+len(plaintext))
	putPrefix(out, dekVersion)
	return aead.Seal(out, nil, plaintext, ad), nil
}

// sealWithNonce is Seal with a caller-chosen nonce. Only for known-answer
// tests: reusing a nonce under one key breaks GCM.
func sealWithNonce(dek []byte, dekVersion uint32, aad AAD, nonce, plaintext []byte) ([]byte, error) {
	block, ad, err := sealInputs(dek, dekVersion, aad)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("envelope: gcm: %w", err)
	}
	if len(nonce) != NonceSize {
		return nil, fmt.Errorf("envelope: nonce must be %d bytes", NonceSize)
	}
	out := make([]byte, headerLen, minSealed+len(plaintext))
	putPrefix(out, dekVersion)
	copy(out[prefixLen:], nonce)
	return aead.Seal(out, nonce, plaintext, ad), nil
}

// Open authenticates and decrypts a value made by Seal. The DEK version is
// taken from the header and authenticated; callers pick dek by
// ParseHeader(sealed).DEKVersion.
func Open(dek []byte, aad AAD, sealed []byte) ([]byte, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, err
	}
	ad, err := additionalData(aad, h.Format, h.DEKVersion)
	if err != nil {
		return nil, err
	}
	block, err := newBlock(dek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("envelope: gcm: %w", err)
	}
	pt, err := aead.Open(nil, nil, sealed[prefixLen:], ad)
	if err != nil {
		// The underlying error says nothing useful and must not be
		// mistaken for a format problem.
		return nil, ErrDecrypt
	}
	return pt, nil
}

// sealInputs checks dek and builds the cipher and the additional data a
// FormatV1 seal under dekVersion binds.
func sealInputs(dek []byte, dekVersion uint32, aad AAD) (cipher.Block, []byte, error) {
	ad, err := additionalData(aad, FormatV1, dekVersion)
	if err != nil {
		return nil, nil, err
	}
	block, err := newBlock(dek)
	if err != nil {
		return nil, nil, err
	}
	return block, ad, nil
}

func newBlock(dek []byte) (cipher.Block, error) {
	if len(dek) != KeySize {
		return nil, fmt.Errorf("%w (got %d)", ErrKeySize, len(dek))
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, fmt.Errorf("envelope: aes: %w", err)
	}
	return block, nil
}

func putPrefix(out []byte, dekVersion uint32) {
	copy(out, magic)
	out[len(magic)] = FormatV1
	binary.BigEndian.PutUint32(out[len(magic)+1:], dekVersion)
}

// additionalData encodes the GCM additional data:
//
//	"vaultd/envelope/v1" 0x00
//	| u32be len(tenant) tenant | u32be len(integration) integration | u32be len(field) field
//	| format (1 byte) | dek_version u32be
//
// Length prefixes make the encoding injective: ("a","bc") and ("ab","c")
// differ, whatever bytes the names contain.
func additionalData(a AAD, format byte, dekVersion uint32) ([]byte, error) {
	for _, s := range []string{a.Tenant, a.Integration, a.Field} {
		if s == "" || len(s) > maxNameLen {
			return nil, ErrAAD
		}
	}
	b := make([]byte, 0, len(aadLabel)+1+12+len(a.Tenant)+len(a.Integration)+len(a.Field)+1+4)
	b = append(b, aadLabel...)
	b = append(b, 0)
	b = appendString(b, a.Tenant)
	b = appendString(b, a.Integration)
	b = appendString(b, a.Field)
	b = append(b, format)
	b = binary.BigEndian.AppendUint32(b, dekVersion)
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
