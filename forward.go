package gqlpush

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// hopByHop are headers that belong to one connection and can never be
// forwarded onto the upstream's WebSocket handshake.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"}

// checkForwardHeaders canonicalises the names of Upstream.ForwardHeaders.
func checkForwardHeaders(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		c := http.CanonicalHeaderKey(strings.TrimSpace(n))
		if !isToken(c) {
			return nil, errors.New("holds " + strconv.Quote(clip(n)) + ", not a header name")
		}
		if slices.Contains(hopByHop, c) || strings.HasPrefix(c, "Sec-Websocket-") {
			return nil, errors.New("holds " + c + ", which belongs to one connection and cannot be forwarded")
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}

// forward builds what goes upstream for one caller: the handshake headers
// (the upstream's own, then the allowed client headers) and the
// connection_init payload. The digest covers what was taken from the caller:
// callers whose forwarded values differ never share an upstream connection
// or a subscription. Nothing forwarded, no digest.
func (h *Handler) forward(r *http.Request, up *upstream, p *Principal) (http.Header, json.RawMessage, string, *httpError) {
	header, init := up.header, up.init
	if len(up.forward) == 0 && up.initFunc == nil {
		return header, init, "", nil
	}
	d := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		d.Write(n[:])
		d.Write(b)
	}
	if len(up.forward) > 0 {
		header = up.header.Clone()
		for _, name := range up.forward {
			vals := r.Header.Values(name)
			field([]byte(name))
			field([]byte(strconv.Itoa(len(vals))))
			for _, v := range vals {
				field([]byte(v))
			}
			if len(vals) > 0 {
				header[name] = slices.Clone(vals)
			}
		}
	}
	if up.initFunc != nil {
		payload, err := up.initFunc(r, p)
		if err == nil && payload != nil && !isJSONObject(payload) {
			err = errors.New("not a JSON object")
		}
		if err != nil {
			h.log.Error("building the connection_init payload failed", "upstream", up.label, "err", scrubURLs(err.Error()))
			return nil, nil, "", errInternal
		}
		init = payload
		field([]byte("init"))
		field(payload)
	}
	return header, init, hex.EncodeToString(d.Sum(nil)), nil
}

func isJSONObject(b []byte) bool {
	var obj map[string]any
	return json.Unmarshal(b, &obj) == nil && obj != nil
}

// isToken reports whether s is a token of RFC 9110, section 5.6.2: what a
// header's name is made of.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
