// Package jwttest issues JSON Web Tokens for tests of code that gqlpushjwt
// guards: real keys (RSA, EC and Ed25519, each with a key id) and the JSON
// Web Key Set that publishes them, and tokens signed with any of them or
// with an HMAC secret.
//
//	is := jwttest.NewIssuer(t)
//	a, _ := gqlpushjwt.New(gqlpushjwt.Config{JWKS: is.JWKS, Issuer: jwttest.Iss, Audience: jwttest.Aud})
//	token := is.RS256(t, jwttest.Claims("alice", "admin"))
package jwttest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The iss and aud of the claims Claims makes.
const (
	Iss = "https://issuer.test"
	Aud = "gqlpush"
)

// Key ids of an Issuer's keys, in its JWKS.
const (
	KeyRSA     = "rsa1"
	KeyEC      = "ec1"
	KeyEd25519 = "ed1"
)

// An Issuer holds signing keys and their JSON Web Key Set.
type Issuer struct {
	RSA     *rsa.PrivateKey
	EC      *ecdsa.PrivateKey // P-256
	Ed25519 ed25519.PrivateKey
	// JWKS is the key set that publishes the three public keys, with their
	// key ids and algorithms (RS256, ES256, EdDSA).
	JWKS []byte
}

// NewIssuer makes an issuer with fresh keys; it fails t if it cannot.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	pad := func(n *big.Int, size int) string { return b64(n.FillBytes(make([]byte, size))) }
	jwks, err := json.Marshal(map[string]any{"keys": []any{
		map[string]any{"kty": "RSA", "kid": KeyRSA, "alg": "RS256", "use": "sig", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
		map[string]any{"kty": "EC", "kid": KeyEC, "alg": "ES256", "use": "sig", "crv": "P-256", "x": pad(ek.X, 32), "y": pad(ek.Y, 32)},
		map[string]any{"kty": "OKP", "kid": KeyEd25519, "alg": "EdDSA", "use": "sig", "crv": "Ed25519", "x": b64(dk.Public().(ed25519.PublicKey))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{RSA: rk, EC: ek, Ed25519: dk, JWKS: jwks}
}

// Claims returns valid claims for sub: Iss, Aud, issued now,
// expiring in an hour, with roles when any are given.
func Claims(sub string, roles ...string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": Iss, "aud": Aud, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if roles != nil {
		c["roles"] = roles
	}
	return c
}

// Sign signs c with method and key, naming kid in the header when it is not
// empty; it fails t if it cannot.
func Sign(t testing.TB, method jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// RS256 signs c with the issuer's RSA key.
func (is *Issuer) RS256(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	return Sign(t, jwt.SigningMethodRS256, KeyRSA, is.RSA, c)
}

// ES256 signs c with the issuer's EC key.
func (is *Issuer) ES256(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	return Sign(t, jwt.SigningMethodES256, KeyEC, is.EC, c)
}

// EdDSA signs c with the issuer's Ed25519 key.
func (is *Issuer) EdDSA(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	return Sign(t, jwt.SigningMethodEdDSA, KeyEd25519, is.Ed25519, c)
}

// HS256 signs c with secret.
func HS256(t testing.TB, secret []byte, c jwt.MapClaims) string {
	t.Helper()
	return Sign(t, jwt.SigningMethodHS256, "", secret, c)
}
