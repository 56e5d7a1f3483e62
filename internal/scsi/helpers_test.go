package scsi

import "github.com/blkcopy/blkcopy/internal/copypath"

func isUnavailable(err error) bool { return copypath.IsUnavailable(err) }
