package gqlpushjwt

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzExtractToken: any headers give a token of bounded token68 shape, or
// nothing, or an error; never a panic, and never a token the headers did
// not carry.
func FuzzExtractToken(f *testing.F) {
	for _, s := range [][2]string{
		{"Bearer abc.def.ghi", ""},
		{"bearer   abc", ""},
		{"", "access_token=abc.def"},
		{"Bearer abc", "access_token=abc"},
		{"Bearer abc", "access_token=xyz"},
		{"Basic dXNlcjpwYXNz", ""},
		{"Bearer ", "access_token="},
		{"Bearer a b", "access_token=a; access_token=b"},
		{"Bearer ====", "x=1; access_token=\"quoted\""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, auth, cookie string) {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		tok, err := extractToken(h, DefaultCookie)
		if err != nil || tok == "" {
			return
		}
		if !isToken68(tok) {
			t.Fatalf("token %q is not token68", tok)
		}
		if !strings.Contains(auth, tok) && !strings.Contains(cookie, tok) {
			t.Fatalf("token %q came from nowhere", tok)
		}
	})
}
