package api

import (
	"net"
	"strconv"
)

// MaxServiceNameLen keeps a service name one DNS label long.
const MaxServiceNameLen = 63

// MaxInstanceIDLen bounds an instance id.
const MaxInstanceIDLen = 128

// ValidateServiceName checks a service name: [a-z0-9-]+, at most 63
// characters, so it is one DNS label and one NATS subject token.
func ValidateServiceName(name string) error {
	if name == "" {
		return Errorf(CodeValidation, "service name is empty")
	}
	if len(name) > MaxServiceNameLen {
		return Errorf(CodeValidation, "service name %.20q... is %d characters long, the limit is %d", name, len(name), MaxServiceNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return Errorf(CodeValidation, "service name %q has %q at position %d; only a-z, 0-9 and - are allowed", name, c, i)
		}
	}
	return nil
}

// ValidateInstanceID checks an instance id: 1-128 characters of [A-Za-z0-9_.-].
func ValidateInstanceID(id string) error {
	if id == "" {
		return Errorf(CodeValidation, "instance id is empty")
	}
	if len(id) > MaxInstanceIDLen {
		return Errorf(CodeValidation, "instance id is %d characters long, the limit is %d", len(id), MaxInstanceIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return Errorf(CodeValidation, "instance id %q has %q at position %d; only A-Z, a-z, 0-9, _, . and - are allowed", id, c, i)
		}
	}
	return nil
}

// ValidateProto checks an instance's proto: [a-z0-9]+.
func ValidateProto(proto string) error {
	if proto == "" {
		return Errorf(CodeValidation, "instance proto is empty")
	}
	if len(proto) > 32 {
		return Errorf(CodeValidation, "instance proto is %d characters long, the limit is 32", len(proto))
	}
	for i := 0; i < len(proto); i++ {
		c := proto[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return Errorf(CodeValidation, "instance proto %q has %q at position %d; only a-z and 0-9 are allowed", proto, c, i)
		}
	}
	return nil
}

// ValidateAddr checks an instance's address: host:port with a port of 1-65535.
func ValidateAddr(addr string) error {
	if addr == "" {
		return Errorf(CodeValidation, "instance addr is empty")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Errorf(CodeValidation, "instance addr %q is not host:port", addr)
	}
	if host == "" {
		return Errorf(CodeValidation, "instance addr %q has no host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Errorf(CodeValidation, "instance addr %q has port %q; it must be a number from 1 to 65535", addr, port)
	}
	return nil
}

// MaxMetaBytes bounds the total size of an instance's meta keys and values.
const MaxMetaBytes = 64 << 10

// PrepareInstance validates an instance received for service under pathID
// (empty when the transport has no id of its own) and fills in its id. It
// clears Index, which only the server assigns.
func PrepareInstance(inst *Instance, pathID string) error {
	if err := ValidateProto(inst.Proto); err != nil {
		return err
	}
	if err := ValidateAddr(inst.Addr); err != nil {
		return err
	}
	if pathID != "" {
		if inst.ID != "" && inst.ID != pathID {
			return Errorf(CodeValidation, "instance id %q in the body differs from %q in the path", inst.ID, pathID)
		}
		inst.ID = pathID
	}
	if inst.ID == "" {
		inst.ID = DefaultInstanceID(inst.Proto, inst.Addr)
	}
	if err := ValidateInstanceID(inst.ID); err != nil {
		return err
	}
	size := 0
	for k, v := range inst.Meta {
		if k == "" {
			return Errorf(CodeValidation, "instance meta has an empty key")
		}
		size += len(k) + len(v)
	}
	if size > MaxMetaBytes {
		return Errorf(CodeValidation, "instance meta is %d bytes, the limit is %d", size, MaxMetaBytes)
	}
	if len(inst.Meta) == 0 {
		inst.Meta = nil
	}
	inst.Index = 0
	return nil
}

// ValidateLeaderType checks a service's leader type.
func ValidateLeaderType(t LeaderType) error {
	switch t {
	case LeaderTypeOldest, LeaderTypeManual:
		return nil
	}
	return Errorf(CodeValidation, "leader_type %q is not one of \"oldest\", \"manual\"", t)
}
