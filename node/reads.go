package node

import "github.com/discoverd/discoverd/api"

// AppendInstances appends a service's instances, in order of index, to dst
// (see fsm.AppendInstances): for readers that answer many small queries,
// such as DNS, and reuse one buffer.
func (n *Node) AppendInstances(dst []*api.Instance, service string) ([]*api.Instance, error) {
	v, err := n.readyVoter()
	if err != nil {
		return dst, err
	}
	return v.fsm.AppendInstances(dst, service)
}
