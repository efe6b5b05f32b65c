package policy

import (
	"fmt"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// Kata's agent decides CopyFile on a digest of the request rather than the
// request (PolicyCopyFileRequest): the file's kind by name, a symlink's
// target as text, the numeric fields, and no data. A symlink whose target
// is not UTF-8 is refused before any rule runs, as Kata's agent refuses it.
// Cocoon adds "remove": true to a removal (its extension: delete the path
// instead), and only then, so that a copy's input stays Kata's.

// requestInput is the input Kata's agent evaluates req with.
func requestInput(req proto.Message) (ast.Value, error) {
	if r, ok := req.(*pb.CopyFileRequest); ok {
		return copyFileInput(r)
	}
	return inputOf(req.ProtoReflect()), nil
}

// fileType names the S_IFMT part of a mode as Kata's FileType does.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "Regular"
	case unix.S_IFDIR:
		return "Directory"
	case unix.S_IFLNK:
		return "Symlink"
	}
	return "Unknown"
}

// copyFileInput is the input of a CopyFileRequest.
func copyFileInput(r *pb.CopyFileRequest) (ast.Value, error) {
	kind := fileType(r.FileMode)
	target := ast.InternedNullTerm
	if kind == "Symlink" {
		if !utf8.Valid(r.Data) {
			return nil, fmt.Errorf("symlink %q: target is not UTF-8", r.Path)
		}
		target = ast.StringTerm(string(r.Data))
	}
	o := ast.NewObject(
		[2]*ast.Term{ast.StringTerm("path"), ast.StringTerm(r.Path)},
		[2]*ast.Term{ast.StringTerm("file_type"), ast.StringTerm(kind)},
		[2]*ast.Term{ast.StringTerm("symlink_target"), target},
		[2]*ast.Term{ast.StringTerm("file_size"), ast.InternedTerm(r.FileSize)},
		[2]*ast.Term{ast.StringTerm("file_mode"), ast.InternedTerm(int64(r.FileMode))},
		[2]*ast.Term{ast.StringTerm("dir_mode"), ast.InternedTerm(int64(r.DirMode))},
		[2]*ast.Term{ast.StringTerm("uid"), ast.InternedTerm(int64(r.Uid))},
		[2]*ast.Term{ast.StringTerm("gid"), ast.InternedTerm(int64(r.Gid))},
		[2]*ast.Term{ast.StringTerm("offset"), ast.InternedTerm(r.Offset)},
	)
	if r.Remove {
		o.Insert(ast.StringTerm("remove"), ast.InternedTerm(true))
	}
	return o, nil
}
