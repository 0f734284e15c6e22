package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/discoverd/discoverd/api"
)

// Magic is the first line of every snapshot file.
const Magic = "discoverd-snapshot 1\n"

// FormatVersion is the format of the header and registry. A reader refuses
// a file of another format rather than guess.
const FormatVersion = 1

// MaxBytes bounds a snapshot a server takes back: far above a registry of
// a million instances, far below what would hurt a node to hold in memory.
const MaxBytes = 1 << 30

const checksumPrefix = "sha256 "

// Header describes a snapshot; it is the file's second line.
type Header struct {
	Format int `json:"format"`
	// Version is the discoverd version that wrote the snapshot.
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	// Index is the Raft index of the registry the snapshot holds.
	Index     uint64 `json:"index"`
	Services  int    `json:"services"`
	Instances int    `json:"instances"`
}

// Writer writes one snapshot: NewWriter writes the magic and the header,
// Write the registry, Close the checksum.
type Writer struct {
	w io.Writer
	h hash.Hash
}

// NewWriter starts a snapshot on w.
func NewWriter(w io.Writer, hdr Header) (*Writer, error) {
	hdr.Format = FormatVersion
	b, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	sw := &Writer{w: w, h: sha256.New()}
	if _, err := sw.Write(append([]byte(Magic), append(b, '\n')...)); err != nil {
		return nil, err
	}
	return sw, nil
}

// Write writes part of the registry.
func (sw *Writer) Write(p []byte) (int, error) {
	sw.h.Write(p)
	return sw.w.Write(p)
}

// Close writes the checksum line. The registry must end with a newline.
func (sw *Writer) Close() error {
	_, err := io.WriteString(sw.w, checksumPrefix+hex.EncodeToString(sw.h.Sum(nil))+"\n")
	return err
}

// File is a snapshot read and verified.
type File struct {
	Header Header
	// Registry is the JSON of the registry.
	Registry []byte
	// Checksum is the SHA-256 of the file (all but its last line), in hex.
	Checksum string
	// Size is the file's size in bytes.
	Size int64
}

// Read reads a whole snapshot of at most max bytes and verifies it. Any
// error is a validation error saying what is wrong with the file.
func Read(r io.Reader, max int64) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, api.Errorf(api.CodeValidation, "snapshot is larger than %d bytes", max)
	}
	return Parse(data)
}

// Parse verifies a whole snapshot held in data.
func Parse(data []byte) (*File, error) {
	bad := func(format string, args ...any) error {
		return api.Errorf(api.CodeValidation, "not a valid discoverd snapshot: "+format, args...)
	}
	if !bytes.HasPrefix(data, []byte(Magic)) {
		if len(data) == 0 {
			return nil, bad("the file is empty")
		}
		return nil, bad("it does not start with %q (another program's file?)", Magic[:len(Magic)-1])
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, bad("it does not end with its checksum line (cut short?)")
	}
	last := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
	sumLine := data[last : len(data)-1]
	if !bytes.HasPrefix(sumLine, []byte(checksumPrefix)) || last <= len(Magic) {
		return nil, bad("it does not end with its checksum line (cut short?)")
	}
	want := string(sumLine[len(checksumPrefix):])
	if len(want) != 2*sha256.Size || strings.ToLower(want) != want {
		return nil, bad("its checksum line is malformed")
	}
	sum := sha256.Sum256(data[:last])
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, bad("checksum mismatch: the file is damaged (sha256 %s, the file says %s)", got, want)
	}
	rest := data[len(Magic):last]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		return nil, bad("no header line")
	}
	f := &File{Registry: rest[nl+1:], Checksum: want, Size: int64(len(data))}
	if err := json.Unmarshal(rest[:nl], &f.Header); err != nil {
		return nil, bad("malformed header: %v", err)
	}
	if f.Header.Format != FormatVersion {
		return nil, bad("format %d, this build reads format %d", f.Header.Format, FormatVersion)
	}
	if len(f.Registry) == 0 {
		return nil, bad("no registry")
	}
	return f, nil
}

// Registry is the registry part of a snapshot, as inspect reads it.
type Registry struct {
	Index    uint64    `json:"index"`
	Services []Service `json:"services"`
}

// Service is one service of a Registry.
type Service struct {
	Name         string            `json:"name"`
	Config       api.ServiceConfig `json:"config"`
	Instances    []*api.Instance   `json:"instances"`
	ManualLeader string            `json:"manual_leader,omitempty"`
	Meta         *api.ServiceMeta  `json:"meta,omitempty"`
}

// DecodeRegistry decodes the registry of a verified file.
func (f *File) DecodeRegistry() (*Registry, error) {
	var reg Registry
	if err := json.Unmarshal(f.Registry, &reg); err != nil {
		return nil, api.Errorf(api.CodeValidation, "not a valid discoverd snapshot: malformed registry: %v", err)
	}
	return &reg, nil
}

// String describes a header for a person.
func (h Header) String() string {
	return fmt.Sprintf("index %d, %d services, %d instances, written by discoverd %s at %s",
		h.Index, h.Services, h.Instances, h.Version, h.Created.Format(time.RFC3339))
}
