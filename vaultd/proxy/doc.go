// Package proxy holds the mechanics of vaultd's outbound calls (the
// outbound rules of the proxy and execute routes, docs/api.md): the egress check that confines a
// caller-chosen path to a provider's api_base_url, header filtering in both
// directions, streaming redaction of the access token from upstream
// answers, the Forwarder that injects the token and never follows
// redirects, Forwarder.Call (the one path both routes take: the token
// from a Tokens source, one forced refresh and retry on an upstream 401
// when the source allows it, the redirect egress check), Relay (the
// answer back to the caller), the memory budget of buffered execute
// answers, and the JSON codec of the execute endpoint. It knows nothing of
// the vault or the HTTP server: the server hands it a Tokens for the
// integration being called and translates its errors.
//
// Decisions an operator may want to know:
//
//   - The path a caller gives is judged in its escaped form (the server
//     passes the part of r.URL.EscapedPath() after ".../proxy/"). Dot
//     segments, encoded slashes and backslashes, encoded control characters
//     and dot segments hidden behind repeated percent-encoding (%252e) are
//     refused, and so is any byte outside ASCII at any decoding layer (which
//     covers look-alikes such as U+FF0E or U+2025 and overlong UTF-8 such as
//     %C0%AE; non-ASCII data belongs in the query), as are a raw "@", "?", "#",
//     empty segments ("//"), a leading "scheme:" and over-long input. A
//     percent-encoded "@" (%40) is data and allowed; so is a ":" after the
//     first segment (Google-style "v1/users:batchGet").
//   - Outbound, the caller's Authorization, Cookie, X-Tenant-Context,
//     Proxy-Authorization, Host, Forwarded/X-Forwarded-*/Via/X-Real-Ip,
//     Alt-Used and hop-by-hop headers are dropped. Accept-Encoding, Range and
//     If-Range are dropped too: a compressed or partial echo of the token
//     would slip past redaction (the Forwarder asks for gzip itself and
//     decompresses it, so the redactor always sees plaintext).
//   - Inbound, hop-by-hop headers, Set-Cookie (upstream cookies belong to
//     the vault's session with the provider, not to the app), origin-scoped
//     policy headers (Alt-Svc, Strict-Transport-Security) and Content-Length
//     (redaction may change the length) are dropped; every remaining header
//     and trailer value has the token replaced by [REDACTED]. An answer in a
//     content coding the vault cannot read (e.g. br sent although only gzip
//     was offered) is refused rather than passed on unverified.
//   - The token is redacted in its raw form and the spellings an echo is
//     likely to use: percent-encoded (either hex case, any set of reserved
//     characters escaped), form-decoded ("+" as space), JSON-escaped ("\/",
//     "\u002f" in either case), hex, and base64/base64url at every byte
//     alignment (so inside base64("Bearer "+token) too; one or two boundary
//     characters stay visible). An upstream that transforms the token
//     otherwise (substrings, encryption) can still reveal it; that is
//     outside what a proxy can detect.
//   - Errors of upstream calls are classified by type and logged by type
//     and by fields that are vaultd's own (address, errno), never by their
//     text, which may quote bytes the upstream sent.
package proxy
