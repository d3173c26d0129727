package gqlpush

import (
	"encoding/json"

	"github.com/wI2L/jsondiff"
)

// patchFrames are the frames of an RFC 6902 JSON Patch from one result to
// the next, for clients that asked for wg_json_patch.
type patchFrames struct {
	empty bool   // nothing changed: send nothing
	sse   []byte // nil when the patch is not smaller than the result
	plain []byte
}

// patchFrom returns the patch from prev to ev. The patch from the event just
// before is computed once, for every client that had it; any other prev
// (rare: a client that resumed) gets its own.
func (ev *event) patchFrom(prev *event) *patchFrames {
	if prev.seq+1 != ev.seq || prev.replayed || ev.replayed {
		return ev.makePatch(prev)
	}
	ev.patchOnce.Do(func() { ev.patch = ev.makePatch(prev) })
	return ev.patch
}

func (ev *event) makePatch(prev *event) *patchFrames {
	patch, err := jsondiff.CompareJSON(prev.json, ev.json)
	if err != nil {
		return &patchFrames{} // send the full result
	}
	if len(patch) == 0 {
		return &patchFrames{empty: true}
	}
	body, err := json.Marshal(patch)
	if err != nil || len(body) >= len(ev.json) {
		return &patchFrames{}
	}
	// The patch frame has the event's id line, if any, and its own data.
	idLine := ev.sse[:len(ev.sse)-len(ev.plain)-len(sseDataPrefix)]
	buf := make([]byte, 0, len(idLine)+len(sseDataPrefix)+len(body)+2)
	buf = append(buf, idLine...)
	buf = append(buf, sseDataPrefix...)
	start := len(buf)
	buf = append(buf, body...)
	buf = append(buf, "\n\n"...)
	return &patchFrames{sse: buf, plain: buf[start:]}
}
