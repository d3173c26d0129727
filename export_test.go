package gqlpush

// What the external tests of the upstream pool need of it: they run against
// gqlpushtest's upstream, which package gqlpush's own tests cannot import.

// A Recorder takes what the pool delivers for one subscription, as the hub
// would.
type Recorder interface {
	Publish(raw []byte) error
	End(reason Reason, errors string)
}

type recorderReceiver struct{ r Recorder }

func (a recorderReceiver) publish(raw []byte, _ uint64) error { return a.r.Publish(raw) }
func (a recorderReceiver) end(e ending)                       { a.r.End(e.why.reason(), string(e.errors)) }
func (a recorderReceiver) begin()                             {}

// OpenUpstream opens the subscription of the operation name, with the
// canonical variables vars ("" for none), for callers whose forwarded
// values digest to digest, on the handler's upstream pool, delivering to r;
// close stops it.
func (h *Handler) OpenUpstream(name, vars, digest string, r Recorder) (close func(), err error) {
	ep := h.endpoints[name]
	hd, err := ep.src.open(&openRequest{ep: ep, vars: ep.variablesJSON(vars), header: ep.up.header, init: ep.up.init, forwardDigest: digest}, recorderReceiver{r})
	if err != nil {
		return nil, err
	}
	return hd.close, nil
}

// SetNATSPendingLimits sets how much nats.go buffers for each core
// subscription of the handler's NATS upstreams, before any is made.
func (h *Handler) SetNATSPendingLimits(msgs, bytes int) {
	for _, src := range h.sources {
		if ns, ok := src.(*natsSource); ok {
			ns.pendingMsgs, ns.pendingBytes = msgs, bytes
		}
	}
}
