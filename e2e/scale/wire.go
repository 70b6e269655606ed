package main

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A thousand proxies receiving a full configuration at once would, with
// the generated types, hold a thousand decoded responses of a thousand
// google.protobuf.Any each: a gigabyte of garbage and most of the
// harness's CPU in the collector. The proxies read responses with this
// codec instead. It copies a response into a pooled buffer and indexes it
// in place: type, version, nonce, and per resource its name and bytes,
// aliasing the buffer; nothing is decoded unless the shared state cache
// has not seen the content before. Requests are ordinary go-control-plane
// messages marshalled with proto.

// wireCodec is the client codec of the simulated proxies. Its name is
// "proto", so meshd sees an ordinary gRPC protobuf stream.
type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

// sotwRequest is a state-of-the-world request whose resource names are
// sent as their list encoded them once: a thousand proxies ACKing an
// endpoint change would otherwise encode, and check for UTF-8, a thousand
// names each, and the harness would compete with meshd for the CPU doing
// work that Envoy does on its own machine.
type sotwRequest struct {
	req   *discoveryv3.DiscoveryRequest // without ResourceNames
	names *nameList                     // nil for none
}

// The field number of DiscoveryRequest.resource_names.
const resourceNamesField = 3

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*sotwRequest); ok {
		b, err := proto.Marshal(r.req)
		if err != nil {
			return nil, err
		}
		if r.names != nil {
			b = append(b, r.names.wire...)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("wireCodec cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*wireResponse)
	if !ok {
		return fmt.Errorf("wireCodec cannot unmarshal into %T", v)
	}
	r.reset()
	n := data.Len()
	r.buf = getBuffer(n)
	data.CopyTo(r.buf)
	r.size = n
	return r.parse(r.buf)
}

// wireResponse is a DiscoveryResponse or DeltaDiscoveryResponse indexed in
// place. Call release when done with it: the resources alias a pooled
// buffer.
type wireResponse struct {
	delta     bool
	buf       []byte
	size      int
	typeURL   string
	version   string // version_info, or system_version_info for delta
	nonce     string
	resources []resource
	removed   []string
	// content hashes every resource's name and bytes, in order: equal
	// content, equal hash, whichever proxy received it.
	content uint64
}

func (r *wireResponse) reset() {
	r.release()
	r.size, r.typeURL, r.version, r.nonce, r.content = 0, "", "", "", 0
	r.resources, r.removed = r.resources[:0], r.removed[:0]
}

// release returns the buffer to the pool; the resources are invalid after.
func (r *wireResponse) release() {
	if r.buf != nil {
		putBuffer(r.buf)
		r.buf = nil
	}
	clear(r.resources)
	r.resources = r.resources[:0]
}

// Field numbers of envoy.service.discovery.v3 messages and google.protobuf.Any.
const (
	fResponseVersion   = 1 // DiscoveryResponse.version_info, Delta: system_version_info
	fResponseResources = 2
	fResponseTypeURL   = 4
	fResponseNonce     = 5
	fDeltaRemoved      = 6 // DeltaDiscoveryResponse.removed_resources
	fResourceName      = 3 // Resource.name
	fResourceBody      = 2 // Resource.resource (Any)
	fAnyValue          = 2
)

var errMalformed = errors.New("malformed xDS response")

// parse indexes b. Unknown fields are skipped, as protobuf requires.
func (r *wireResponse) parse(b []byte) error {
	var h maphash.Hash
	h.SetSeed(seed)
	err := fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fResponseVersion:
			r.version = string(v)
		case fResponseTypeURL:
			r.typeURL = string(v)
		case fResponseNonce:
			r.nonce = string(v)
		case fDeltaRemoved:
			if r.delta {
				r.removed = append(r.removed, string(v))
			}
		case fResponseResources:
			res, ok, err := r.resource(v)
			if err != nil || !ok {
				return err
			}
			h.Write(res.name)
			h.WriteByte(0)
			h.Write(res.value)
			h.WriteByte(0)
			r.resources = append(r.resources, res)
		}
		return nil
	})
	r.content = h.Sum64()
	return err
}

// resource indexes one SOTW Any or one delta Resource. ok is false for a
// delta Resource without a body (nothing to apply).
func (r *wireResponse) resource(b []byte) (res resource, ok bool, err error) {
	if !r.delta {
		res.value, err = anyValue(b)
		if err != nil {
			return res, false, err
		}
		res.name, err = resourceName(res.value)
		return res, err == nil, err
	}
	var body []byte
	err = fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fResourceName:
			res.name = v
		case fResourceBody:
			body = v
			ok = true
		}
		return nil
	})
	if err != nil || !ok {
		return res, false, err
	}
	res.value, err = anyValue(body)
	return res, err == nil, err
}

// anyValue returns the value bytes of a google.protobuf.Any.
func anyValue(b []byte) ([]byte, error) {
	var value []byte
	err := fields(b, func(num protowire.Number, v []byte) error {
		if num == fAnyValue {
			value = v
		}
		return nil
	})
	return value, err
}

// fields calls fn with every length-delimited field of b and skips the
// others (every field the proxies read is a string, bytes or message).
func fields(b []byte, fn func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(m))
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(m))
		}
		b = b[m:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}

// resourceName reads a resource's name without decoding it: in every type
// the proxies subscribe to, the name (cluster_name for an endpoint
// assignment) is field 1, a string. The result aliases value.
func resourceName(value []byte) ([]byte, error) {
	var name []byte
	found := false
	err := fields(value, func(num protowire.Number, v []byte) error {
		if num == 1 && !found {
			name, found = v, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: a resource has no name (field 1)", errMalformed)
	}
	return name, nil
}

// buffers recycles response buffers between proxies: only the responses
// being processed at one moment hold one.
var buffers sync.Pool

func getBuffer(n int) []byte {
	if p, ok := buffers.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func putBuffer(b []byte) {
	buffers.Put(&b)
}
