package dnsapi

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/discoverd/discoverd/api"
)

// Options configure the DNS server.
type Options struct {
	// Domain is the zone served, "discoverd." when empty.
	Domain string
	// TTL is the TTL of every record (and the SOA's minimum), in seconds.
	TTL uint32
	// Recursors are upstream servers (host:port) for names outside Domain;
	// with none, such names are REFUSED.
	Recursors []string
	// RecursorTimeout bounds one upstream exchange (2s when zero).
	RecursorTimeout time.Duration
	Log             zerolog.Logger
}

// ednsSize is the UDP payload size this server announces in its OPT record.
const ednsSize = 4096

// Handler answers DNS queries from a Backend. It implements dns.Handler.
type Handler struct {
	b         Backend
	domain    string
	ttl       uint32
	recursors []string
	udp, tcp  *dns.Client
	soa       *dns.SOA
	metrics   *Metrics
	log       zerolog.Logger
	pool      sync.Pool
}

// NewHandler returns a Handler over b.
func NewHandler(b Backend, o Options) *Handler {
	domain := strings.ToLower(dns.Fqdn(o.Domain))
	if o.Domain == "" {
		domain = "discoverd."
	}
	if o.RecursorTimeout <= 0 {
		o.RecursorTimeout = 2 * time.Second
	}
	h := &Handler{
		b:         b,
		domain:    domain,
		ttl:       o.TTL,
		recursors: o.Recursors,
		udp:       &dns.Client{Net: "udp", Timeout: o.RecursorTimeout, UDPSize: ednsSize},
		tcp:       &dns.Client{Net: "tcp", Timeout: o.RecursorTimeout},
		metrics:   NewMetrics(),
		log:       o.Log,
	}
	h.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: o.TTL},
		Ns:      "ns." + domain,
		Mbox:    "hostmaster." + domain,
		Serial:  uint32(time.Now().Unix()),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  o.TTL,
	}
	h.pool.New = func() any { return new(scratch) }
	return h
}

// Metrics are the handler's counters, for the node's registry.
func (h *Handler) Metrics() *Metrics { return h.metrics }

// Domain is the zone the handler serves (lower case, fully qualified).
func (h *Handler) Domain() string { return h.domain }

// scratch is one query's working memory, pooled so that answering a query
// allocates little beyond what miekg/dns itself does: the records are
// elements of typed slices sized for the whole answer before the first is
// taken, so their addresses stay valid until the reply is packed.
type scratch struct {
	msg   dns.Msg
	q     []dns.Question
	insts []*api.Instance
	ans   []dns.RR
	ns    []dns.RR
	extra []dns.RR
	a     []dns.A
	aaaa  []dns.AAAA
	cname []dns.CNAME
	srv   []dns.SRV
	opt   dns.OPT
	ips   []byte
	seen  []netip.Addr
	seenM map[netip.Addr]struct{}
	hosts []string
	names []byte // SRV target names, see srvRecords
	buf   []byte
}

// reset readies s for an answer of up to n instances.
func (s *scratch) reset(n int) {
	if cap(s.srv) < n {
		// Address records answer, and over TCP also follow SRV records:
		// room for both.
		s.a = make([]dns.A, 0, 2*n)
		s.aaaa = make([]dns.AAAA, 0, 2*n)
		s.cname = make([]dns.CNAME, 0, n)
		s.srv = make([]dns.SRV, 0, n)
		s.ips = make([]byte, 0, 2*16*n)
	}
	s.a, s.aaaa, s.cname, s.srv, s.ips = s.a[:0], s.aaaa[:0], s.cname[:0], s.srv[:0], s.ips[:0]
	s.seen, s.hosts = s.seen[:0], s.hosts[:0]
	clear(s.seenM)
}

// release drops what s points to (instances, names) and returns it.
func (h *Handler) release(s *scratch) {
	clear(s.insts)
	s.insts = s.insts[:0]
	clear(s.ans)
	clear(s.extra)
	clear(s.hosts)
	s.msg = dns.Msg{}
	h.pool.Put(s)
}

// The kinds of names in the zone.
type nameKind uint8

const (
	nameInvalid  nameKind = iota
	nameApex              // discoverd.
	nameService           // {service}.discoverd.
	nameProto             // _{service}._{proto}.discoverd.
	nameLeader            // leader.{service}.discoverd.
	nameInstance          // {id}.{service}._i.discoverd.
)

// parsedName is a query name inside the zone, taken apart.
type parsedName struct {
	kind    nameKind
	service string
	proto   string
	id      string
}

// parseName takes apart rest, the query name without the zone and its dot
// (lower case). Anything that is not one of the zone's shapes, or whose
// parts are not valid names, is nameInvalid (NXDOMAIN).
func parseName(rest string) parsedName {
	if rest == "" {
		return parsedName{kind: nameApex}
	}
	last := strings.LastIndexByte(rest, '.')
	if last < 0 {
		if validService(rest) {
			return parsedName{kind: nameService, service: rest}
		}
		return parsedName{}
	}
	tail, head := rest[last+1:], rest[:last]
	if tail == "_i" {
		dot := strings.LastIndexByte(head, '.')
		if dot <= 0 {
			return parsedName{}
		}
		id, service := head[:dot], head[dot+1:]
		if validService(service) && validID(id) {
			return parsedName{kind: nameInstance, service: service, id: id}
		}
		return parsedName{}
	}
	if strings.IndexByte(head, '.') >= 0 {
		return parsedName{}
	}
	if head == "leader" && validService(tail) {
		return parsedName{kind: nameLeader, service: tail}
	}
	if len(head) > 1 && head[0] == '_' && len(tail) > 1 && tail[0] == '_' &&
		validService(head[1:]) && validProto(tail[1:]) {
		return parsedName{kind: nameProto, service: head[1:], proto: tail[1:]}
	}
	return parsedName{}
}

// validService reports whether s is a service name: [a-z0-9-]{1,63}. (The
// query name is already in lower case.)
func validService(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validID reports whether s is an instance id: [A-Za-z0-9_.-]{1,128}.
func validID(s string) bool {
	if len(s) == 0 || len(s) > api.MaxInstanceIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func validProto(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// lower returns s in lower case, allocating only when s has upper case.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// ServeDNS answers one query.
func (h *Handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	h.metrics.query(tcp)
	if len(r.Question) != 1 {
		h.fail(w, r, dns.RcodeFormatError)
		return
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		h.fail(w, r, dns.RcodeRefused)
		return
	}
	name := lower(q.Name)
	rest, inZone := h.inZone(name)
	if !inZone {
		h.recurse(w, r, tcp)
		return
	}

	s := h.pool.Get().(*scratch)
	defer h.release(s)
	m := &s.msg
	m.Id = r.Id
	m.Response = true
	m.Opcode = r.Opcode
	m.Authoritative = true
	m.RecursionDesired = r.RecursionDesired
	m.RecursionAvailable = len(h.recursors) > 0
	m.CheckingDisabled = r.CheckingDisabled
	s.q = append(s.q[:0], q)
	m.Question = s.q
	s.ans, s.extra = s.ans[:0], s.extra[:0]

	rcode := h.answer(s, parseName(rest), q, tcp)
	m.Rcode = rcode
	m.Answer = s.ans
	if len(s.ans) == 0 && (rcode == dns.RcodeSuccess || rcode == dns.RcodeNameError) {
		s.ns = append(s.ns[:0], h.soa)
		m.Ns = s.ns
	}
	m.Extra = s.extra

	size := dns.MaxMsgSize
	if opt := r.IsEdns0(); opt != nil {
		s.opt = dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		s.opt.SetUDPSize(ednsSize)
		m.Extra = append(m.Extra, &s.opt)
		if !tcp {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	} else if !tcp {
		size = dns.MinMsgSize
	}
	m.Compress = true
	answers := len(m.Answer)
	m.Truncate(size)
	h.metrics.answered(rcode, len(m.Answer), m.Truncated && len(m.Answer) < answers)
	s.extra = m.Extra[:0]
	buf, err := m.PackBuffer(s.buf[:cap(s.buf)])
	if err != nil {
		h.log.Warn().Err(err).Str("name", q.Name).Msg("dns: packing an answer failed")
		h.fail(w, r, dns.RcodeServerFailure)
		return
	}
	w.Write(buf)
	s.buf = buf[:0]
}

// inZone reports whether name (lower case, fully qualified) is in the zone,
// and returns its part before the zone, without the separating dot.
func (h *Handler) inZone(name string) (string, bool) {
	if !strings.HasSuffix(name, h.domain) {
		return "", false
	}
	rest := name[:len(name)-len(h.domain)]
	if rest == "" {
		return "", true
	}
	if rest[len(rest)-1] != '.' {
		return "", false // "xdiscoverd.": another zone
	}
	return rest[:len(rest)-1], true
}

// fail answers r with rcode and nothing else (its question, if it had
// exactly one).
func (h *Handler) fail(w dns.ResponseWriter, r *dns.Msg, rcode int) {
	m := &dns.Msg{MsgHdr: dns.MsgHdr{
		Id: r.Id, Response: true, Opcode: r.Opcode, Rcode: rcode,
		RecursionDesired: r.RecursionDesired, RecursionAvailable: len(h.recursors) > 0,
	}}
	if len(r.Question) == 1 {
		m.Question = r.Question
	}
	h.metrics.answered(rcode, 0, false)
	w.WriteMsg(m)
}

// answer fills s.ans (and s.extra) for a name of the zone and returns the
// rcode.
func (h *Handler) answer(s *scratch, n parsedName, q dns.Question, tcp bool) int {
	qt := q.Qtype
	switch n.kind {
	case nameInvalid:
		return dns.RcodeNameError
	case nameApex:
		if qt == dns.TypeSOA || qt == dns.TypeANY {
			s.ans = append(s.ans, h.soa)
		}
		return dns.RcodeSuccess
	case nameLeader:
		inst, err := h.b.Leader(n.service)
		if err != nil {
			return rcodeOf(err)
		}
		if inst == nil {
			return dns.RcodeSuccess
		}
		s.insts = append(s.insts[:0], inst)
		s.reset(1)
		if qt == dns.TypeSRV || qt == dns.TypeANY {
			h.srvRecords(s, q.Name, "", true, tcp)
		}
		if qt != dns.TypeSRV {
			h.addrRecords(s, q.Name, qt, false)
		}
		return dns.RcodeSuccess
	}

	var err error
	s.insts, err = h.b.AppendInstances(s.insts[:0], n.service)
	if err != nil {
		return rcodeOf(err)
	}
	switch n.kind {
	case nameInstance:
		found := false
		for _, inst := range s.insts {
			if strings.EqualFold(inst.ID, n.id) {
				clear(s.insts[1:]) // the pooled buffer keeps no other instance alive
				s.insts[0], s.insts = inst, s.insts[:1]
				found = true
				break
			}
		}
		if !found {
			return dns.RcodeNameError
		}
		s.reset(1)
		h.addrRecords(s, q.Name, qt, false)
		return dns.RcodeSuccess
	case nameProto:
		kept := s.insts[:0]
		for _, inst := range s.insts {
			if inst.Proto == n.proto {
				kept = append(kept, inst)
			}
		}
		clear(s.insts[len(kept):])
		s.insts = kept
	}
	// A service, or a service and proto: shuffled, so that clients spread
	// over the instances and a truncated answer holds a random subset.
	rand.Shuffle(len(s.insts), func(i, j int) { s.insts[i], s.insts[j] = s.insts[j], s.insts[i] })
	s.reset(len(s.insts))
	if qt == dns.TypeSRV || qt == dns.TypeANY {
		h.srvRecords(s, "", n.service, false, tcp)
	}
	if qt != dns.TypeSRV {
		h.addrRecords(s, q.Name, qt, true)
	}
	return dns.RcodeSuccess
}

// rcodeOf maps a backend error to an rcode: an unknown service does not
// exist (NXDOMAIN); anything else is the server's failure.
func rcodeOf(err error) int {
	if api.IsCode(err, api.CodeNotFound) {
		return dns.RcodeNameError
	}
	return dns.RcodeServerFailure
}

// splitAddr takes an instance's host:port apart, without allocating.
func splitAddr(addr string) (host string, ip netip.Addr, port uint16, ok bool) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", netip.Addr{}, 0, false
	}
	p, err := strconv.ParseUint(addr[i+1:], 10, 16)
	if err != nil {
		return "", netip.Addr{}, 0, false
	}
	host = addr[:i]
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	ip, err = netip.ParseAddr(host)
	if err != nil {
		ip = netip.Addr{}
	}
	return host, ip.Unmap(), uint16(p), host != ""
}

// addrRecords appends, for each instance of s.insts, its address record of
// type qt (A, AAAA, or both for ANY) owned by owner, or a CNAME to its host
// name when its address is a name. With dedup, each address and each host
// name is answered once.
func (h *Handler) addrRecords(s *scratch, owner string, qt uint16, dedup bool) {
	if qt != dns.TypeA && qt != dns.TypeAAAA && qt != dns.TypeANY {
		return
	}
	useMap := dedup && len(s.insts) > 32
	if useMap && s.seenM == nil {
		s.seenM = make(map[netip.Addr]struct{}, len(s.insts))
	}
	for _, inst := range s.insts {
		host, ip, _, ok := splitAddr(inst.Addr)
		if !ok {
			continue
		}
		if !ip.IsValid() {
			if dedup && contains(s.hosts, host) {
				continue
			}
			s.hosts = append(s.hosts, host)
			s.cname = append(s.cname, dns.CNAME{
				Hdr:    dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: h.ttl},
				Target: dns.Fqdn(host),
			})
			s.ans = append(s.ans, &s.cname[len(s.cname)-1])
			continue
		}
		if qt == dns.TypeA && !ip.Is4() || qt == dns.TypeAAAA && ip.Is4() {
			continue
		}
		if dedup {
			if useMap {
				if _, dup := s.seenM[ip]; dup {
					continue
				}
				s.seenM[ip] = struct{}{}
			} else {
				if containsAddr(s.seen, ip) {
					continue
				}
				s.seen = append(s.seen, ip)
			}
		}
		s.ans = append(s.ans, h.addrRR(s, owner, ip))
	}
}

// addrRR makes the A or AAAA record of ip, in s's memory.
func (h *Handler) addrRR(s *scratch, owner string, ip netip.Addr) dns.RR {
	hdr := dns.RR_Header{Name: owner, Class: dns.ClassINET, Ttl: h.ttl}
	if ip.Is4() {
		b := ip.As4()
		start := len(s.ips)
		s.ips = append(s.ips, b[:]...)
		hdr.Rrtype = dns.TypeA
		s.a = append(s.a, dns.A{Hdr: hdr, A: net.IP(s.ips[start:len(s.ips):len(s.ips)])})
		return &s.a[len(s.a)-1]
	}
	b := ip.As16()
	start := len(s.ips)
	s.ips = append(s.ips, b[:]...)
	hdr.Rrtype = dns.TypeAAAA
	s.aaaa = append(s.aaaa, dns.AAAA{Hdr: hdr, AAAA: net.IP(s.ips[start:len(s.ips):len(s.ips)])})
	return &s.aaaa[len(s.aaaa)-1]
}

// srvRecords appends an SRV record per instance of s.insts. A leader's SRV
// (leader true) is owned by, and targets, the queried name; a service's are
// owned by the queried name and target {id}.{service}._i.{zone}. An
// instance whose address is a host name targets that name. Over TCP, the
// additional section carries the targets' address records.
func (h *Handler) srvRecords(s *scratch, owner, service string, leader, tcp bool) {
	q := s.q[0].Name
	if !leader {
		// Every target name is written into one buffer, sized first so
		// that it never moves: the names are strings over it, alive only
		// until the reply is packed, and a query allocates none.
		size := 0
		for _, inst := range s.insts {
			size += len(inst.ID) + len(service) + len("._i.") + 1 + len(h.domain)
		}
		if cap(s.names) < size {
			s.names = make([]byte, 0, size)
		}
		s.names = s.names[:0]
	}
	for _, inst := range s.insts {
		host, ip, port, ok := splitAddr(inst.Addr)
		if !ok {
			continue
		}
		var target string
		switch {
		case !ip.IsValid():
			target = dns.Fqdn(host)
		case leader:
			target = owner
		default:
			start := len(s.names)
			s.names = append(s.names, inst.ID...)
			s.names = append(s.names, '.')
			s.names = append(s.names, service...)
			s.names = append(s.names, "._i."...)
			s.names = append(s.names, h.domain...)
			target = unsafe.String(&s.names[start], len(s.names)-start)
		}
		s.srv = append(s.srv, dns.SRV{
			Hdr:      dns.RR_Header{Name: q, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: h.ttl},
			Priority: 1, Weight: 1, Port: port, Target: target,
		})
		s.ans = append(s.ans, &s.srv[len(s.srv)-1])
		if tcp && ip.IsValid() {
			s.extra = append(s.extra, h.addrRR(s, target, ip))
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, v := range list {
		if v == a {
			return true
		}
	}
	return false
}

// recurse passes a query for a name outside the zone to the recursors, in
// order, and relays the first answer; with no recursors it is REFUSED.
func (h *Handler) recurse(w dns.ResponseWriter, r *dns.Msg, tcp bool) {
	if len(h.recursors) == 0 {
		h.fail(w, r, dns.RcodeRefused)
		return
	}
	c := h.udp
	if tcp {
		c = h.tcp
	}
	for _, upstream := range h.recursors {
		resp, _, err := c.Exchange(r, upstream)
		if err != nil {
			h.log.Debug().Err(err).Str("upstream", upstream).Msg("dns: recursor did not answer")
			continue
		}
		resp.Id = r.Id
		resp.RecursionAvailable = true
		answers := len(resp.Answer)
		if !tcp {
			size := dns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = max(int(opt.UDPSize()), dns.MinMsgSize)
			}
			resp.Truncate(size)
		}
		h.metrics.recursed()
		h.metrics.answered(resp.Rcode, len(resp.Answer), resp.Truncated && len(resp.Answer) < answers)
		w.WriteMsg(resp)
		return
	}
	h.fail(w, r, dns.RcodeServerFailure)
}
