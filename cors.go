package gqlpush

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// checkOrigins normalises Config.CORSOrigins: each is scheme://host[:port].
func checkOrigins(origins []string) ([]string, error) {
	var out []string
	for _, o := range origins {
		if o == "*" {
			return nil, &ConfigError{Field: "CORSOrigins", Err: ErrInvalid, Detail: "holds *: cross-origin requests carry credentials, so origins are listed one by one"}
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || strings.ContainsAny(o, "?#@") {
			shown := strconv.Quote(clip(o))
			if strings.Contains(o, "@") {
				shown = "a URL with user info" // which may be a password: not shown
			}
			return nil, &ConfigError{Field: "CORSOrigins", Err: ErrInvalid, Detail: "holds " + shown + ", not an origin like https://app.example.com"}
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// cors answers cross-origin requests from the listed origins (the Fetch
// standard's CORS protocol): they may read streams, with credentials, since
// a browser's EventSource sends cookies. Others get no CORS header at all.
// It reports whether it answered the request (a preflight).
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(h.origins) == 0 {
		return false
	}
	hd := w.Header()
	hd.Add("Vary", "Origin")
	allowed := slices.Contains(h.origins, strings.ToLower(origin))
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if !allowed {
		if preflight {
			writeError(w, errForbidden)
			return true
		}
		return false
	}
	hd.Set("Access-Control-Allow-Origin", origin)
	hd.Set("Access-Control-Allow-Credentials", "true")
	if !preflight {
		return false
	}
	hd.Add("Vary", "Access-Control-Request-Method")
	hd.Add("Vary", "Access-Control-Request-Headers")
	hd.Set("Access-Control-Allow-Methods", "GET")
	hd.Set("Access-Control-Allow-Headers", h.corsHeaders)
	hd.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
