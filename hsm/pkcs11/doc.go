// Package pkcs11 is the hsm.Keyring backed by a PKCS#11 token: the KEK is a
// set of AES-256 token objects that never leave the HSM, and data keys are
// wrapped and unwrapped inside it.
//
// It needs cgo (the module is a C library loaded with dlopen): the backend
// is built with the cgo build tag, and a build without cgo has only Config,
// ErrNoCgo and an Open and InitKEK that fail with ErrNoCgo. The package name
// clashes with github.com/miekg/pkcs11, which this package uses under that
// name; importers that need both alias this one (hsmpkcs11).
//
// KEK versions share one CKA_LABEL and are told apart by CKA_ID (version, 4
// bytes big-endian); the highest is current, older ones stay for Unwrap.
// InitKEK creates version 1 ('vaultctl init'); Open refuses to start
// without a KEK or with one that is extractable or not sensitive. Besides
// hsm.Keyring, PKCS11 implements hsm.KEKRotator, hsm.Reloader,
// hsm.KEKInspector, hsm.AuditSigner and hsm.TenantKeyring.
//
// Tenant keys (hsm.TenantKeyring, crypto-shredding) are AES-256 token
// objects labelled "<kek_label>-tenant-<tenant id>" (CKA_ID the tenant id)
// with the KEK's protection attributes, created by vaultd when a tenant is
// created and destroyed with C_DestroyObject when it is offboarded. They
// wrap DEKs with the same raw C_Encrypt/C_Decrypt CKM_AES_GCM code as the
// KEK, in the blob format of hsm.AppendTenantWrapped.
//
// Files: pkcs11.go (the type, Open, InitKEK, Close, errors), session.go
// (module, login, session pool), kek.go (finding, checking, creating and
// reporting KEK versions), wrap.go (Wrap, Unwrap), tenant.go (tenant keys),
// health.go (Ping), negotiate.go (choosing the wrapping scheme from the
// token's mechanism list, no cgo), schemes.go (each scheme in the HSM, the
// MAC key, the self-test).
//
// # Wrapping schemes
//
// Open reads the token's mechanism list (C_GetMechanismList,
// C_GetMechanismInfo: CKF_ENCRYPT/DECRYPT, CKF_SIGN/VERIFY) and takes the
// strongest of hsm.Scheme's three it offers: AES-GCM; AES-KWP (RFC 5649,
// CKM_AES_KEY_WRAP_KWP or CKM_AES_KEY_WRAP_PAD, through C_Encrypt/C_Decrypt
// only, so the KEK stays encrypt/decrypt-only; a token offering it only as
// C_WrapKey is passed over); AES-CBC-PAD encrypt-then-MAC with
// HMAC-SHA256 under a second non-extractable key "<kek_label>-mac" (a
// generic secret, sign/verify only, made by InitKEK or InitMACKey), the
// MAC checked with C_Verify before anything is decrypted, and a known block
// (hsm.CBCKeyCheck) encrypted ahead of the key so that a blob under another
// key (the MAC key is shared) fails instead of decrypting to garbage.
// Tokens without CKA_DESTROYABLE (openCryptoki 3.8) get tenant keys
// without that attribute, destroyable by default. Config.ForceScheme
// pins one. Each blob records its scheme and unwraps by it, so a database
// moves between tokens. Open, InitKEK and Ping run a wrap/unwrap round trip
// (Open and InitKEK also under a throwaway session key made like a tenant
// key); no usable scheme, or a listed mechanism the token refuses, fails
// with hsm.ErrMechanism in one line. Every scheme's keys are HSM objects:
// none rests on key material outside the HSM.
//
// # Design
//
// crypto11 does what it does well and nothing else: Configure (load the
// module, find the token by label, log in, keep a persistent logged-in
// session) and GenerateSecretKeyWithAttributes (KEK creation). Wrap and
// Unwrap do NOT go through crypto11's cipher.AEAD: its Seal cannot return an
// error and panics on an HSM failure, which would take down the daemon on a
// transient device error.
//
// Instead Wrap/Unwrap are C_EncryptInit/C_Encrypt and C_DecryptInit/
// C_Decrypt with the negotiated scheme's mechanism (for AES-GCM: 12-byte
// random IV from crypto/rand, 128-bit tag, caller AAD) through raw github.com/miekg/pkcs11, in read-only sessions
// from a small pool of our own over the same module. Our handle on the module
// is a second dlopen of the same library; its C_Initialize answers
// CKR_CRYPTOKI_ALREADY_INITIALIZED because crypto11 initialised it, and it
// never calls C_Finalize: crypto11 owns the module's lifetime (refcounted per
// path, finalised when its last Context closes). Login state is per
// application in PKCS#11, so our sessions are logged in through crypto11's.
//
// Why AES-GCM encryption and not C_WrapKey: CKM_AES_KEY_WRAP(_PAD) through
// C_WrapKey needs the DEK to exist as an HSM object first (one C_CreateObject
// plus C_DestroyObject per DEK, and a session object holding key material),
// it binds no AAD, and support for the padded variant varies between HSMs.
// CKM_AES_GCM via C_Encrypt is supported by SoftHSMv2 2.6.1 and by the
// production HSMs we target, authenticates the tenant and DEK version through
// the AAD, and reports every failure as an error. (SoftHSMv2 reports a tag
// mismatch as CKR_GENERAL_ERROR; Unwrap tells it from a sick device by
// checking that the session is still logged in.)
//
// Object handles are found with raw C_FindObjects because crypto11 does not
// expose them; token-object handles are valid in every session of the
// application, so they are looked up once (Open, RotateKEK, Reload).
//
// Errors are *hsm.Error values matching the hsm sentinels (errors.Is) with
// a short context; no message carries the PIN. If the HSM drops the
// sessions (and with them the login), every call fails with
// hsm.ErrUnavailable until the keyring is reopened: there is deliberately no
// automatic re-login, which could lock a changed PIN by retrying it. Known
// limitation: miekg/pkcs11 copies a decrypted DEK through a C buffer that
// it frees without zeroing.
package pkcs11
