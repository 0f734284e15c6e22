package fsm

import (
	"github.com/discoverd/discoverd/api"
)

// MaxCommandType is the newest command type this build applies. A node
// announces it (api.NodeInfo.MaxCommandType) so that the leader writes a
// type only once every voter applies it: see ForMaxType.
const MaxCommandType = CmdAddInstances

// BaselineCommandType is the newest type a node that announces none
// applies: the releases before nodes announced it knew every type up to
// CmdRemoveNode and not CmdAddInstanceCompact.
const BaselineCommandType = CmdRemoveNode

// ForMaxType returns cmd in a form that a node applying types up to max
// applies with the same result: cmd itself when its type is not newer than
// max, else its older equivalent. A type with no older form, or one this
// build does not know, is a validation error: it must never reach the log.
func ForMaxType(cmd []byte, max CommandType) ([]byte, error) {
	if len(cmd) == 0 || CommandType(cmd[0]) <= max {
		return cmd, nil
	}
	t := CommandType(cmd[0])
	switch {
	case t == CmdAddInstanceCompact && max >= CmdAddInstance:
		service, inst, err := decodeAddInstance(cmd[1:])
		if err != nil {
			return nil, err
		}
		return Encode(CmdAddInstance, &AddInstance{Service: string(service), Instance: inst})
	case t > MaxCommandType:
		return nil, api.Errorf(api.CodeValidation, "unknown command type %d (this build applies types up to %d)", t, MaxCommandType)
	}
	return nil, api.Errorf(api.CodeUnavailable, "command type %d (%s) is not applied by every voter yet, and has no older form", t, t)
}
