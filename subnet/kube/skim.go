package kube

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"k8s.io/apimachinery/pkg/types"
)

// A page of the initial node list is about 7 KB a node, nearly all of it
// kubelet status (images, conditions, node info) that a peer never needs.
// Decoding it into v1.Node objects allocates all of that only to throw it
// away; at 5,000 nodes that was a third of flanneld's start-up CPU, counting
// the garbage collection it caused. skimNodeList walks the API server's
// protobuf encoding instead and copies out only what PeerNode keeps.

// protoMagic opens every object in Kubernetes' protobuf encoding.
var protoMagic = []byte("k8s\x00")

// Field numbers, from k8s.io/api/core/v1 and k8s.io/apimachinery's
// generated.proto files.
const (
	unknownTypeMeta = 1 // runtime.Unknown
	unknownRaw      = 2
	typeMetaKind    = 2 // runtime.TypeMeta

	listMeta  = 1 // v1.NodeList
	listItems = 2

	listMetaResourceVersion = 2 // metav1.ListMeta
	listMetaContinue        = 3

	nodeMeta = 1 // v1.Node
	nodeSpec = 2

	metaName            = 1 // metav1.ObjectMeta
	metaUID             = 5
	metaResourceVersion = 6
	metaAnnotations     = 12

	specPodCIDR  = 1 // v1.NodeSpec
	specPodCIDRs = 7

	mapKey   = 1 // a map entry
	mapValue = 2
)

// isProtobuf reports whether data is in Kubernetes' protobuf encoding.
func isProtobuf(data []byte) bool { return bytes.HasPrefix(data, protoMagic) }

// skimNodeList reads a NodeList in Kubernetes' protobuf encoding (magic
// prefix included) and appends its nodes to out as PeerNodes, as Strip
// would make them. It sets out's resourceVersion and continue token.
func (a Annotations) skimNodeList(data []byte, out *PeerNodeList) error {
	kind, raw, err := unwrap(data)
	if err != nil {
		return err
	}
	if string(kind) != "NodeList" {
		return fmt.Errorf("the API server sent a %q where a NodeList was expected", kind)
	}
	prefix := a.prefix()
	return eachField(raw, func(num protowire.Number, v []byte) error {
		switch num {
		case listMeta:
			return eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case listMetaResourceVersion:
					out.ResourceVersion = string(v)
				case listMetaContinue:
					out.Continue = string(v)
				}
				return nil
			})
		case listItems:
			out.Items = append(out.Items, PeerNode{})
			if err := a.skimNode(v, prefix, &out.Items[len(out.Items)-1]); err != nil {
				out.Items = out.Items[:len(out.Items)-1]
				return fmt.Errorf("reading node %d of the list: %w", len(out.Items), err)
			}
		}
		return nil
	})
}

// unwrap reads the envelope (runtime.Unknown behind the magic prefix) of
// an object in Kubernetes' protobuf encoding: the object's kind and its
// encoded fields.
func unwrap(data []byte) (kind, raw []byte, err error) {
	if !isProtobuf(data) {
		return nil, nil, errors.New("not a Kubernetes protobuf object")
	}
	err = eachField(data[len(protoMagic):], func(num protowire.Number, v []byte) error {
		switch num {
		case unknownTypeMeta:
			return eachField(v, func(num protowire.Number, v []byte) error {
				if num == typeMetaKind {
					kind = v
				}
				return nil
			})
		case unknownRaw:
			raw = v
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the protobuf envelope: %w", err)
	}
	return kind, raw, nil
}

// skimNode fills p from one encoded v1.Node, or from one encoded
// metav1.PartialObjectMetadata, whose metadata has the same field number
// (it has no spec: p gets no podCIDRs).
func (a Annotations) skimNode(data []byte, prefix string, p *PeerNode) error {
	// spec.podCIDRs, or spec.podCIDR alone: as Strip chooses.
	var podCIDR []byte
	var podCIDRs [][]byte
	err := eachField(data, func(num protowire.Number, v []byte) error {
		switch num {
		case nodeMeta:
			return eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case metaName:
					p.Name = string(v)
				case metaUID:
					p.UID = types.UID(v)
				case metaResourceVersion:
					p.ResourceVersion = string(v)
				case metaAnnotations:
					return a.skimAnnotation(v, prefix, p)
				}
				return nil
			})
		case nodeSpec:
			return eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case specPodCIDR:
					podCIDR = v
				case specPodCIDRs:
					podCIDRs = append(podCIDRs, v)
				}
				return nil
			})
		}
		return nil
	})
	if len(podCIDRs) == 0 && len(podCIDR) > 0 {
		podCIDRs = append(podCIDRs, podCIDR)
	}
	if len(podCIDRs) > 0 {
		p.PodCIDRs = make([]string, len(podCIDRs))
		for i, c := range podCIDRs {
			p.PodCIDRs[i] = string(c)
		}
	}
	return err
}

// skimAnnotation keeps one annotation map entry if its key has our prefix,
// sharing the key strings Annotations already holds.
func (a Annotations) skimAnnotation(entry []byte, prefix string, p *PeerNode) error {
	var key, val []byte
	err := eachField(entry, func(num protowire.Number, v []byte) error {
		switch num {
		case mapKey:
			key = v
		case mapValue:
			val = v
		}
		return nil
	})
	if err != nil || !bytes.HasPrefix(key, []byte(prefix)) {
		return err
	}
	if p.Annotations == nil {
		p.Annotations = make(map[string]string, 5)
	}
	p.Annotations[a.internKey(key)] = string(val)
	return nil
}

// internKey returns the shared string for a known annotation key, so 5,000
// nodes do not hold 25,000 copies of the same few keys.
func (a Annotations) internKey(key []byte) string {
	if string(key) == a.BackendType {
		return a.BackendType
	}
	if string(key) == a.KubeSubnetManager {
		return a.KubeSubnetManager
	}
	for _, f := range a.families {
		for _, k := range [...]string{f.BackendData, f.PublicIP, f.PublicIPOverwrite, f.NodePublicIP} {
			if string(key) == k {
				return k
			}
		}
	}
	return string(key)
}

// eachField calls fn with the number and payload of every length-delimited
// field of the protobuf message data, and skips the other wire types.
func eachField(data []byte, fn func(num protowire.Number, v []byte) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("bad protobuf tag: %w", protowire.ParseError(n))
		}
		data = data[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return fmt.Errorf("bad protobuf field %d: %w", num, protowire.ParseError(n))
			}
			data = data[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(data)
		if n < 0 {
			return fmt.Errorf("bad protobuf field %d: %w", num, protowire.ParseError(n))
		}
		data = data[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}
