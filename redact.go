package gqlpush

import (
	"net/url"
	"regexp"
)

// urlInText finds URLs in error texts.
var urlInText = regexp.MustCompile(`(?i)\b(?:wss?|https?)://[^\s"'<>]+`)

// scrubURLs rewrites every URL in a text to its scheme, host and path: user
// info and query strings, where credentials hide, never reach a log line.
func scrubURLs(s string) string {
	return urlInText.ReplaceAllStringFunc(s, func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return "<url>"
		}
		return u.Scheme + "://" + u.Host + u.EscapedPath()
	})
}
