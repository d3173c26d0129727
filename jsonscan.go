package gqlpush

import "bytes"

// The hot path reads upstream messages without encoding/json's reflection:
// it checks a message once with json.Valid, then walks its top-level members
// by hand, keeps slices of the input instead of copies, and compacts results
// while framing them. Inputs here are valid JSON, checked beforehand.

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string that starts at b[i]. It
// jumps from quote to quote (bytes.IndexByte is vectorised) and counts the
// backslashes before each to tell an escaped quote from the closing one.
func skipString(b []byte, i int) int {
	for i++; i < len(b); {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		i += q
		n := 0
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
	return len(b)
}

// skipValue returns the index just past the value that starts at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// members calls fn with the raw key (quotes included) and the raw value of
// each member of the object b, in order. It reports false when b is not an
// object.
func members(b []byte, fn func(key, value []byte)) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	for i < len(b) && b[i] == '"' {
		k := skipString(b, i)
		key := b[i:k]
		v := skipSpace(b, skipSpace(b, k)+1) // past the colon
		end := skipValue(b, v)
		fn(key, b[v:end])
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return true
}

// appendCompact appends the valid JSON value src without the white space
// outside its strings; with canonical, its strings as encoding/json writes
// them too (see appendCanonicalString).
func appendCompact(dst, src []byte, canonical bool) []byte {
	if !canonical && !bytes.ContainsAny(src, " \t\n\r") {
		return append(dst, src...)
	}
	for i := 0; i < len(src); {
		switch c := src[i]; c {
		case ' ', '\t', '\n', '\r':
			i++
		case '"':
			end := skipString(src, i)
			if canonical {
				dst = appendCanonicalString(dst, src[i:end])
			} else {
				dst = append(dst, src[i:end]...)
			}
			i = end
		default:
			start := i
			for i < len(src) && src[i] != '"' && src[i] != ' ' && src[i] != '\t' && src[i] != '\n' && src[i] != '\r' {
				i++
			}
			dst = append(dst, src[start:i]...)
		}
	}
	return dst
}

// unquoted returns the content of a raw JSON string without escapes, and
// false when it has escapes (the caller then takes the slow path).
func unquoted(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || bytes.IndexByte(raw, '\\') >= 0 {
		return nil, false
	}
	return raw[1 : len(raw)-1], true
}
