package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

//go:embed page.html
var page []byte

const (
	// maxContentBytes bounds the content of a posted message.
	maxContentBytes = 500
	// maxPostBytes bounds the body of POST /post: the content, JSON-escaped
	// (up to 6 bytes a byte, as \u00XX), and the object around it.
	maxPostBytes = 6*maxContentBytes + 64
)

// newPageHandler serves the page. Its inline script and style are allowed by
// their hashes, and nothing else is: no other script runs, and the page can
// only connect to this server.
func newPageHandler() http.Handler {
	csp := "default-src 'none'; connect-src 'self'; " +
		"script-src " + inlineHash(page, "script") + "; " +
		"style-src " + inlineHash(page, "style") + "; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Type", "text/html; charset=utf-8")
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cache-Control", "no-cache")
		w.Write(page)
	})
}

// inlineHash returns the CSP source ('sha256-…') of the first <tag> element
// of the page, or 'none' when there is none.
func inlineHash(page []byte, tag string) string {
	_, rest, ok := bytes.Cut(page, []byte("<"+tag+">"))
	if !ok {
		return "'none'"
	}
	body, _, ok := bytes.Cut(rest, []byte("</"+tag+">"))
	if !ok {
		return "'none'"
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// postHandler serves POST /post: {"content":"…"} posts a message to the
// chat's default room and answers 204. It only takes application/json, which
// a cross-site HTML form cannot send, so another site cannot post through a
// visitor's browser.
func postHandler(chat *gqlpushtest.Chat) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
			return
		}
		var msg struct {
			Content string `json:"content"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPostBytes))
		dec.DisallowUnknownFields()
		err := dec.Decode(&msg)
		if err == nil {
			switch extra := dec.Decode(&struct{}{}); {
			case extra == nil:
				err = errors.New("more than one JSON value")
			case extra != io.EOF:
				err = extra
			}
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, `the body must be {"content":"…"}`, http.StatusBadRequest)
			return
		}
		switch {
		case strings.TrimSpace(msg.Content) == "":
			http.Error(w, "content is empty", http.StatusBadRequest)
			return
		case len(msg.Content) > maxContentBytes:
			http.Error(w, "content is longer than "+strconv.Itoa(maxContentBytes)+" bytes", http.StatusBadRequest)
			return
		}
		chat.Post("", msg.Content)
		w.WriteHeader(http.StatusNoContent)
	})
}
