// Command rclone is rclone with only what the local cluster uses: the S3 and
// local backends, `serve s3` (the cluster's object store) and the copy and
// move commands (the model puller's init containers, and the tests' uploads).
//
// rclone's own main imports every backend and command; building that from
// source costs minutes of CI per cold cache for code we never run. The
// commands behave exactly as in the official binary: they are the same
// packages, at the version pinned in go.mod.
package main

import (
	_ "github.com/rclone/rclone/backend/local"
	_ "github.com/rclone/rclone/backend/s3"
	"github.com/rclone/rclone/cmd"
	_ "github.com/rclone/rclone/cmd/copy"
	_ "github.com/rclone/rclone/cmd/copyto"
	_ "github.com/rclone/rclone/cmd/lsf"
	_ "github.com/rclone/rclone/cmd/mkdir"
	_ "github.com/rclone/rclone/cmd/moveto"
	_ "github.com/rclone/rclone/cmd/serve"
	_ "github.com/rclone/rclone/cmd/serve/s3"
	_ "github.com/rclone/rclone/cmd/version"
)

func main() {
	cmd.Main()
}
