package oauth_test

import (
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vaultd/vaultd/vaultd/oauth"
	"github.com/vaultd/vaultd/vaultd/oauth/oauthtest"
)

func TestParseTokenJSON(t *testing.T) {
	type want struct {
		at, rt, typ string
		exp         int64
		scope       []string
	}
	ok := []struct {
		name string
		in   string
		want want
	}{
		{"minimal", `{"access_token":"AT"}`, want{at: "AT", typ: "Bearer"}},
		{"full", `{"access_token":"AT","token_type":"bearer","expires_in":3600,"refresh_token":"RT","scope":"a b"}`,
			want{"AT", "RT", "bearer", 3600, []string{"a", "b"}}},
		{"expires_in string", `{"access_token":"AT","expires_in":"3599"}`, want{at: "AT", typ: "Bearer", exp: 3599}},
		{"expires_in padded string", `{"access_token":"AT","expires_in":" 60 "}`, want{at: "AT", typ: "Bearer", exp: 60}},
		{"expires_in empty string", `{"access_token":"AT","expires_in":""}`, want{at: "AT", typ: "Bearer"}},
		{"expires_in float integral", `{"access_token":"AT","expires_in":3600.0}`, want{at: "AT", typ: "Bearer", exp: 3600}},
		{"expires_in exponent", `{"access_token":"AT","expires_in":3.6e3}`, want{at: "AT", typ: "Bearer", exp: 3600}},
		{"expires_in null", `{"access_token":"AT","expires_in":null}`, want{at: "AT", typ: "Bearer"}},
		{"scope array", `{"access_token":"AT","scope":["a","b c","a"]}`, want{at: "AT", typ: "Bearer", scope: []string{"a", "b", "c"}}},
		{"scope extra spaces and dup", `{"access_token":"AT","scope":"  a   b a "}`, want{at: "AT", typ: "Bearer", scope: []string{"a", "b"}}},
		{"scope empty", `{"access_token":"AT","scope":""}`, want{at: "AT", typ: "Bearer"}},
		{"scope url", `{"access_token":"AT","scope":"https://www.googleapis.com/auth/drive openid"}`,
			want{at: "AT", typ: "Bearer", scope: []string{"https://www.googleapis.com/auth/drive", "openid"}}},
		{"refresh null", `{"access_token":"AT","refresh_token":null}`, want{at: "AT", typ: "Bearer"}},
		{"refresh empty", `{"access_token":"AT","refresh_token":""}`, want{at: "AT", typ: "Bearer"}},
		{"token_type empty", `{"access_token":"AT","token_type":""}`, want{at: "AT", typ: "Bearer"}},
		{"unknown members ignored", `{"id_token":"x.y.z","access_token":"AT","nested":{"a":[1,2]}}`, want{at: "AT", typ: "Bearer"}},
		{"whitespace", " \n{ \"access_token\" : \"AT\" }\n", want{at: "AT", typ: "Bearer"}},
		{"escaped", `{"access_token":"A\u0054"}`, want{at: "AT", typ: "Bearer"}},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			got, err := oauth.ParseTokenJSON([]byte(c.in))
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got.AccessToken.Reveal() != c.want.at || got.RefreshToken.Reveal() != c.want.rt || got.TokenType != c.want.typ ||
				got.ExpiresIn != c.want.exp || !slices.Equal(got.Scope, c.want.scope) {
				t.Fatalf("got at=%q rt=%q type=%q exp=%d scope=%v", got.AccessToken.Reveal(), got.RefreshToken.Reveal(),
					got.TokenType, got.ExpiresIn, got.Scope)
			}
		})
	}

	const leak = "LEAKYSECRETVALUE"
	bad := []struct{ name, in string }{
		{"empty", ``},
		{"null", `null`},
		{"array", `["` + leak + `"]`},
		{"string", `"` + leak + `"`},
		{"no access_token", `{"refresh_token":"` + leak + `"}`},
		{"access_token null", `{"access_token":null}`},
		{"access_token empty", `{"access_token":""}`},
		{"access_token number", `{"access_token":12345678901234567890}`},
		{"access_token object", `{"access_token":{"v":"` + leak + `"}}`},
		{"access_token control char", `{"access_token":"` + leak + `\n"}`},
		{"access_token non-ascii", `{"access_token":"` + leak + `é"}`},
		{"refresh_token number", `{"access_token":"` + leak + `","refresh_token":1}`},
		{"duplicate access_token", `{"access_token":"` + leak + `","access_token":"b"}`},
		{"duplicate unknown", `{"access_token":"a","` + leak + `":1,"` + leak + `":2}`},
		{"case-folded name only", `{"ACCESS_TOKEN":"` + leak + `"}`},
		{"trailing data", `{"access_token":"a"} {"access_token":"` + leak + `"}`},
		{"truncated", `{"access_token":"` + leak},
		{"garbage after value", `{"access_token":"` + leak + `" x}`},
		{"expires_in negative", `{"access_token":"a","expires_in":-1}`},
		{"expires_in fraction", `{"access_token":"a","expires_in":1.5}`},
		{"expires_in huge", `{"access_token":"a","expires_in":1e300}`},
		{"expires_in over max", `{"access_token":"a","expires_in":99999999999}`},
		{"expires_in word", `{"access_token":"a","expires_in":"` + leak + `"}`},
		{"expires_in bool", `{"access_token":"a","expires_in":true}`},
		{"scope number", `{"access_token":"a","scope":5}`},
		{"scope array non-string", `{"access_token":"a","scope":["a",1]}`},
		{"scope quote", `{"access_token":"a","scope":"a\"b"}`},
		{"scope non-ascii", `{"access_token":"a","scope":"lecture` + "é" + `"}`},
		{"invalid utf8 in token", "{\"access_token\":\"a\xff\"}"},
	}
	for _, c := range bad {
		t.Run("bad/"+c.name, func(t *testing.T) {
			_, err := oauth.ParseTokenJSON([]byte(c.in))
			if !errors.Is(err, oauth.ErrInvalidTokenResponse) {
				t.Fatalf("err = %v, want ErrInvalidTokenResponse", err)
			}
			if strings.Contains(err.Error(), leak) || !errorShape.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
		})
	}
}

func TestTokenUnmarshalJSON(t *testing.T) {
	var body struct {
		Provider string      `json:"provider"`
		Token    oauth.Token `json:"token"`
	}
	in := `{"provider":"example","token":{"access_token":"AT","refresh_token":"RT","expires_in":"10","scope":["x"]}}`
	if err := json.Unmarshal([]byte(in), &body); err != nil {
		t.Fatal(err)
	}
	if body.Token.AccessToken.Reveal() != "AT" || body.Token.RefreshToken.Reveal() != "RT" || body.Token.ExpiresIn != 10 {
		t.Fatal("embedded token not parsed")
	}
	// Marshalling back never reveals the tokens.
	out, err := json.Marshal(body.Token)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `"AT"`) || strings.Contains(string(out), `"RT"`) {
		t.Fatalf("marshalled token reveals secrets: %s", out)
	}
	err = json.Unmarshal([]byte(`{"provider":"example","token":{"access_token":"LEAKY","expires_in":-5}}`), &body)
	if !errors.Is(err, oauth.ErrInvalidTokenResponse) || strings.Contains(err.Error(), "LEAKY") {
		t.Fatalf("err = %v", err)
	}
	if err := json.Unmarshal([]byte(`{"token":null}`), &body); !errors.Is(err, oauth.ErrInvalidTokenResponse) {
		t.Fatalf("null token: err = %v", err)
	}
}

// errorShape is the closed set of ParseTokenJSON error messages: none of
// them can carry input text.
var errorShape = regexp.MustCompile(`^oauth: invalid token response: (` + strings.Join([]string{
	`malformed JSON near offset \d+`,
	`not a JSON object`,
	`duplicate member ("[a-z_]+"|\(unrecognised name\))`,
	`trailing data after the JSON object`,
	`access_token (missing|empty)`,
	`(access_token|refresh_token|token_type) (is not a string|is not a valid string|contains a character outside %x20-7E)`,
	`expires_in (is not a valid string|is neither a number nor a numeric string|is not an integer in range|is negative|is out of range)`,
	`scope (is not a valid string|is not a valid array|array holds a non-string|is neither a string nor an array|contains a character outside NQCHAR)`,
}, "|") + `)$`)

func FuzzParseTokenJSON(f *testing.F) {
	// Seeds live in testdata/fuzz/FuzzParseTokenJSON.
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := oauth.ParseTokenJSON(data)
		if err != nil {
			if !errors.Is(err, oauth.ErrInvalidTokenResponse) || !errorShape.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
			return
		}
		if tok.AccessToken.IsZero() || tok.TokenType == "" || tok.ExpiresIn < 0 || tok.ExpiresIn > oauth.MaxExpiresIn {
			t.Fatalf("invariants broken: %d %q %d", tok.AccessToken.Len(), tok.TokenType, tok.ExpiresIn)
		}
		for _, s := range []string{tok.AccessToken.Reveal(), tok.RefreshToken.Reveal(), tok.TokenType} {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					t.Fatalf("non-VSCHAR byte %#x accepted", s[i])
				}
			}
		}
		seen := map[string]bool{}
		for _, s := range tok.Scope {
			if s == "" || seen[s] || strings.ContainsAny(s, " \"\\") {
				t.Fatalf("bad scope list %q", tok.Scope)
			}
			seen[s] = true
		}
		// Round trip through a canonical rendering gives the same token.
		again, err := oauth.ParseTokenJSON(oauthtest.TokenResponseJSON(tok))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !again.AccessToken.Equal(tok.AccessToken) || !again.RefreshToken.Equal(tok.RefreshToken) ||
			again.TokenType != tok.TokenType || again.ExpiresIn != tok.ExpiresIn || !slices.Equal(again.Scope, tok.Scope) {
			t.Fatal("round trip changed the token")
		}
	})
}
